"""The Triton 3-D SSIM operator: ``torch.library`` custom ops with autograd registered.

Registered as custom ops so ``torch.compile`` treats the kernels as one opaque node with
a known output shape. Forward saves only references to the inputs (no extra memory);
backward recomputes the statistics from them (``fastssim.kernels.volume``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._options import SSIMSettings
from ._triton_function import check_supported, kernel_settings, kernel_terms, plane_shift_pairs
from .kernels import volume as kernels


def ssim3d_triton(x: Tensor, y: Tensor, settings: SSIMSettings, per_pixel: bool) -> Tensor:
    """SSIM map (``per_pixel``) or per-channel means of validated volumes, by the Triton kernels."""
    check_supported(settings, x.dtype, spatial_dims=3)
    return torch.ops.fastssim.ssim3d(x, y, *kernel_terms(settings, x.device), per_pixel)


@torch.library.custom_op("fastssim::ssim3d", mutates_args=())
def _ssim3d(x: Tensor, y: Tensor, taps: Tensor, c1: float, c2: float, sqrt_eps: float,
            padding: int, components: int, per_pixel: bool) -> Tensor:
    settings = kernel_settings(taps, c1, c2, sqrt_eps, padding, components)
    return kernels.ssim3d_forward(x, y, plane_shift_pairs(x, y), settings, per_pixel)


@_ssim3d.register_fake
def _(x, y, taps, c1, c2, sqrt_eps, padding, components, per_pixel):
    settings = kernel_settings(taps, c1, c2, sqrt_eps, padding, components)
    shape = x.shape[:2] + (settings.output_size(*x.shape[2:]) if per_pixel else ())
    return x.new_empty(shape, dtype=torch.float32)


@torch.library.custom_op("fastssim::ssim3d_backward", mutates_args=())
def _ssim3d_backward(x: Tensor, y: Tensor, upstream: Tensor, taps: Tensor, c1: float, c2: float,
                     sqrt_eps: float, padding: int, components: int, per_pixel: bool,
                     need_x: bool, need_y: bool) -> list[Tensor]:
    settings = kernel_settings(taps, c1, c2, sqrt_eps, padding, components)
    dx, dy = kernels.ssim3d_backward(x, y, plane_shift_pairs(x, y), upstream, settings, per_pixel=per_pixel,
                                     need_x=need_x, need_y=need_y)
    return [grad for grad in (dx, dy) if grad is not None]


@_ssim3d_backward.register_fake
def _(x, y, upstream, taps, c1, c2, sqrt_eps, padding, components, per_pixel, need_x, need_y):
    return [torch.empty_like(t, memory_format=torch.contiguous_format)
            for t, needed in ((x, need_x), (y, need_y)) if needed]


def _setup_context(ctx, inputs, output) -> None:
    x, y, *settings = inputs
    ctx.save_for_backward(x, y)
    ctx.settings = settings  # the kernel terms, then per_pixel


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
