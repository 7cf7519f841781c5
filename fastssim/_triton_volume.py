"""The Triton 3-D SSIM operator: ``torch.library`` custom ops with autograd registered.

Registered as custom ops so ``torch.compile`` treats the kernels as one opaque node with
a known output shape. Forward saves only references to the inputs (no extra memory);
backward recomputes the statistics from them (``fastssim.kernels.volume``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._dispatch import TRITON_DTYPES
from ._options import SSIMSettings, gaussian_window
from .kernels import volume as kernels


def ssim3d_triton(x: Tensor, y: Tensor, settings: SSIMSettings, per_pixel: bool) -> Tensor:
    """SSIM map (``per_pixel``) or per-channel means of validated volumes, by the Triton kernels."""
    if settings.radius > kernels.MAX_RADIUS:
        raise ValueError(f"window_size={settings.window_size} is larger than the Triton volume kernels "
                         f"support ({2 * kernels.MAX_RADIUS + 1}); use backend='torch' or 'auto'")
    if x.dtype not in TRITON_DTYPES:
        raise TypeError(f"backend='triton' supports float32, float16 and bfloat16 x and y, got "
                        f"{x.dtype}; use backend='torch' (or 'auto') for float64")
    return torch.ops.fastssim.ssim3d(x, y, settings.window_size, settings.sigma, settings.data_range,
                                     settings.k1, settings.k2, settings.padding, settings.components,
                                     per_pixel)


def volume_output_size(shape: torch.Size, settings: SSIMSettings) -> tuple[int, int, int]:
    """``(D', H', W')`` of the SSIM map of volumes of ``shape`` ``(N, C, D, H, W)``."""
    shrink = settings.window_size - 1 if settings.padding == "valid" else 0
    return tuple(side - shrink for side in shape[-3:])


def _launch_args(x: Tensor, settings: SSIMSettings) -> dict:
    return dict(taps=gaussian_window(settings, torch.float32, x.device),
                out_size=volume_output_size(x.shape, settings), padding=settings.padding,
                components=settings.components, c1=settings.c1, c2=settings.c2,
                sqrt_eps=settings.sqrt_eps)


@torch.library.custom_op("fastssim::ssim3d", mutates_args=())
def _ssim3d(x: Tensor, y: Tensor, window_size: int, sigma: float, data_range: float, k1: float,
            k2: float, padding: str, components: str, per_pixel: bool) -> Tensor:
    settings = SSIMSettings(window_size, sigma, data_range, k1, k2, padding, components)
    return kernels.ssim3d_forward(x, y, per_pixel=per_pixel, **_launch_args(x, settings))


@_ssim3d.register_fake
def _(x, y, window_size, sigma, data_range, k1, k2, padding, components, per_pixel):
    settings = SSIMSettings(window_size, sigma, data_range, k1, k2, padding, components)
    shape = x.shape[:2] + (volume_output_size(x.shape, settings) if per_pixel else ())
    return x.new_empty(shape, dtype=torch.float32)


@torch.library.custom_op("fastssim::ssim3d_backward", mutates_args=())
def _ssim3d_backward(x: Tensor, y: Tensor, upstream: Tensor, window_size: int, sigma: float,
                     data_range: float, k1: float, k2: float, padding: str, components: str,
                     per_pixel: bool, need_x: bool, need_y: bool) -> list[Tensor]:
    settings = SSIMSettings(window_size, sigma, data_range, k1, k2, padding, components)
    dx, dy = kernels.ssim3d_backward(x, y, upstream, per_pixel=per_pixel, need_x=need_x,
                                     need_y=need_y, **_launch_args(x, settings))
    return [grad for grad in (dx, dy) if grad is not None]


@_ssim3d_backward.register_fake
def _(x, y, upstream, window_size, sigma, data_range, k1, k2, padding, components, per_pixel,
      need_x, need_y):
    return [torch.empty_like(t, memory_format=torch.contiguous_format)
            for t, needed in ((x, need_x), (y, need_y)) if needed]


def _setup_context(ctx, inputs, output) -> None:
    x, y, *settings = inputs
    ctx.save_for_backward(x, y)
    ctx.settings = settings  # the seven SSIM settings, then per_pixel


def _backward(ctx, grad: Tensor) -> tuple[Optional[Tensor], ...]:
    x, y = ctx.saved_tensors
    need_x, need_y = ctx.needs_input_grad[:2]
    grads = iter(torch.ops.fastssim.ssim3d_backward(x, y, grad.float().contiguous(), *ctx.settings,
                                                    need_x, need_y))
    dx = next(grads) if need_x else None
    dy = next(grads) if need_y else None
    return (dx, dy) + (None,) * len(ctx.settings)


def _refuse_double_backward(ctx, grads: list[Tensor]):
    raise RuntimeError("the Triton 3-D SSIM has no second derivative (double backward); "
                       "use backend='torch' for higher-order gradients")


torch.library.register_autograd("fastssim::ssim3d", _backward, setup_context=_setup_context)
torch.library.register_autograd("fastssim::ssim3d_backward", _refuse_double_backward,
                                setup_context=lambda ctx, inputs, output: None)
