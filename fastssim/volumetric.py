"""SSIM of volumes: ``ssim3d`` over ``(N, C, D, H, W)`` with a separable 3-D Gaussian window.

Computed by the Triton volume kernels (``fastssim.kernels.volume``) or the PyTorch reference
(:func:`fastssim.reference.ssim_map`), chosen as for 2-D maps.
"""
from __future__ import annotations

import torch

from ._dispatch import resolve_backend
from ._options import REDUCTIONS, SSIMSettings, check_choice, check_pair
from . import reference
from .functional import reduce_ssim


def ssim3d(x: torch.Tensor, y: torch.Tensor, *, window_size: int = 11, sigma: float = 1.5,
           data_range: float = 1.0, k1: float = 0.01, k2: float = 0.03, padding: str = "valid",
           components: str = "lcs", reduction: str = "mean", backend: str = "auto") -> torch.Tensor:
    r"""Gaussian-windowed structural similarity of two volume batches, per channel.

    The formula of :func:`fastssim.ssim`, with local statistics from an isotropic 3-D Gaussian
    window (``window_size`` taps along depth, height and width).

    Args:
        x: first input of shape :math:`(N, C, D, H, W)`, float64/32/16 or bfloat16.
        y: second input, same shape, dtype and device as ``x``.
        window_size: side of the cubic Gaussian window (odd, >= 3).
        sigma: standard deviation of the Gaussian.
        data_range: dynamic range :math:`L` of the inputs.
        k1, k2: the constants of :math:`C_1 = (k_1 L)^2`, :math:`C_2 = (k_2 L)^2`.
        padding: ``"valid"`` (every side shrinks by ``window_size - 1``; as pytorch-msssim's
            5-D input), ``"reflect"`` (same size; as kornia's ``ssim3d``) or ``"zeros"`` (same
            size; as fused-ssim's ``fused_ssim3d``), along all three axes.
        components: subset of ``"lcs"`` (luminance, contrast, structure).
        reduction: ``"mean"`` (scalar), ``"channel"`` :math:`(N, C)`, ``"sample"`` :math:`(N,)`
            or ``"none"`` (the SSIM map).
        backend: ``"auto"`` (the Triton kernels for CUDA float32/16 or bfloat16 volumes and
            windows up to 15, the reference otherwise), ``"torch"`` (the PyTorch reference) or
            ``"triton"`` (raises for float64 or a larger window).

    Returns:
        The SSIM, float64 for float64 input and float32 otherwise.

    Shape:
        - ``reduction="none"``: :math:`(N, C, D', H', W')`, the input size, or each side minus
          ``window_size - 1`` for ``padding="valid"``.

    Examples:
        >>> x = torch.rand(1, 2, 8, 9, 10)
        >>> ssim3d(x, x, window_size=5).item()
        1.0
        >>> ssim3d(x, torch.rand(1, 2, 8, 9, 10), padding="reflect", reduction="none").shape
        torch.Size([1, 2, 8, 9, 10])
    """
    settings = SSIMSettings(window_size, sigma, data_range, k1, k2, padding, components)
    check_choice("reduction", reduction, REDUCTIONS)
    check_pair(x, y, settings, spatial_dims=3)
    per_pixel = reduction == "none"
    if resolve_backend(backend, x, settings) == "triton":
        from ._triton_volume import ssim3d_triton
        values = ssim3d_triton(x, y, settings, per_pixel)
    else:
        values = reference.ssim_map(x, y, settings)
        if not per_pixel:
            values = values.mean(dim=(-3, -2, -1))
    return values if per_pixel else reduce_ssim(values, reduction)
