"""The Triton SSIM operator: ``torch.library`` custom ops with autograd registered.

Registered as custom ops so ``torch.compile(fullgraph=True)`` treats the kernels as one
opaque node with a known output shape. Forward saves only references to the inputs
(no extra memory); backward recomputes the statistics from them.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ._dispatch import TRITON_DTYPES
from ._options import SSIMSettings, gaussian_window
from .kernels import ssim as kernels

_SETTING_NAMES = ("window_size", "sigma", "data_range", "k1", "k2", "padding", "components")


def ssim_levels_triton(xs: Sequence[Tensor], ys: Sequence[Tensor], settings: SSIMSettings,
                       per_pixel: bool) -> list[Tensor]:
    """Per-level SSIM maps (``per_pixel``) or per-channel means through the Triton kernels."""
    if settings.radius > kernels.MAX_RADIUS:
        raise ValueError(f"window_size={settings.window_size} is larger than the Triton kernels "
                         f"support ({2 * kernels.MAX_RADIUS + 1}); use backend='torch'")
    for name, t in (("x", xs[0]), ("y", ys[0])):
        if t.dtype not in TRITON_DTYPES:
            raise TypeError(f"backend='triton' supports float32, float16 and bfloat16 {name}, got "
                            f"{t.dtype}; use backend='torch' (or 'auto') for float64")
    if any(t.dtype != xs[0].dtype or t.device != xs[0].device for t in (*xs, *ys)):
        raise ValueError("all levels must share one dtype and device for backend='triton', got "
                         f"{sorted({(str(t.dtype), str(t.device)) for t in (*xs, *ys)})}")
    values = [getattr(settings, name) for name in _SETTING_NAMES]
    return torch.ops.fastssim.ssim_levels(list(xs), list(ys), *values, per_pixel)


def _launch_args(xs: Sequence[Tensor], settings: SSIMSettings) -> dict:
    return dict(taps=gaussian_window(settings, torch.float32, xs[0].device),
                out_sizes=[settings.output_size(*x.shape[-2:]) for x in xs],
                padding=settings.padding, components=settings.components,
                c1=settings.c1, c2=settings.c2, sqrt_eps=settings.sqrt_eps)


@torch.library.custom_op("fastssim::ssim_levels", mutates_args=())
def _ssim_levels(xs: list[Tensor], ys: list[Tensor], window_size: int, sigma: float,
                 data_range: float, k1: float, k2: float, padding: str, components: str,
                 per_pixel: bool) -> list[Tensor]:
    settings = SSIMSettings(window_size, sigma, data_range, k1, k2, padding, components)
    return kernels.ssim_forward(xs, ys, per_pixel=per_pixel, **_launch_args(xs, settings))


@_ssim_levels.register_fake
def _(xs, ys, window_size, sigma, data_range, k1, k2, padding, components, per_pixel):
    settings = SSIMSettings(window_size, sigma, data_range, k1, k2, padding, components)
    shapes = [x.shape[:2] + (settings.output_size(*x.shape[-2:]) if per_pixel else ()) for x in xs]
    return [x.new_empty(shape, dtype=torch.float32) for x, shape in zip(xs, shapes)]


@torch.library.custom_op("fastssim::ssim_levels_backward", mutates_args=())
def _ssim_levels_backward(xs: list[Tensor], ys: list[Tensor], grads: list[Tensor], window_size: int,
                          sigma: float, data_range: float, k1: float, k2: float, padding: str,
                          components: str, per_pixel: bool, need_x: bool,
                          need_y: bool) -> list[Tensor]:
    settings = SSIMSettings(window_size, sigma, data_range, k1, k2, padding, components)
    dxs, dys = kernels.ssim_backward(xs, ys, grads, per_pixel=per_pixel, need_x=need_x,
                                     need_y=need_y, **_launch_args(xs, settings))
    return dxs + dys


@_ssim_levels_backward.register_fake
def _(xs, ys, grads, window_size, sigma, data_range, k1, k2, padding, components, per_pixel,
      need_x, need_y):
    return [torch.empty_like(x, memory_format=torch.contiguous_format)
            for x in (xs if need_x else []) + (ys if need_y else [])]


def _setup_context(ctx, inputs, output) -> None:
    xs, ys, *settings = inputs
    ctx.save_for_backward(*xs, *ys)
    ctx.num_levels = len(xs)
    ctx.settings = settings  # the seven SSIM settings, then per_pixel
    ctx.need_x = any(x.requires_grad for x in xs)
    ctx.need_y = any(y.requires_grad for y in ys)
    ctx.out_shapes = [out.shape for out in output]


def _backward(ctx, grads: list[Tensor]):
    saved, n = ctx.saved_tensors, ctx.num_levels
    xs, ys = list(saved[:n]), list(saved[n:])
    # Unused outputs get no gradient; the kernels want dense float32 ones.
    grads = [torch.zeros(shape, device=xs[0].device) if g is None else g.float().contiguous()
             for shape, g in zip(ctx.out_shapes, grads)]
    result = torch.ops.fastssim.ssim_levels_backward(xs, ys, grads, *ctx.settings, ctx.need_x, ctx.need_y)
    dxs = result[:n] if ctx.need_x else [None] * n
    dys = result[n * ctx.need_x:] if ctx.need_y else [None] * n
    return (dxs, dys) + (None,) * len(ctx.settings)


torch.library.register_autograd("fastssim::ssim_levels", _backward, setup_context=_setup_context)
