"""SSIM of volumes: ``ssim3d`` over ``(N, C, D, H, W)`` with a separable 3-D Gaussian window.

The Triton kernels are 2-D only, so volumes are computed by the PyTorch reference
(:func:`fastssim.reference.ssim_map`) on every device; ``backend="triton"`` refuses them.
"""
from __future__ import annotations

import torch

from ._options import BACKENDS, REDUCTIONS, SSIMSettings, check_choice, check_pair
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
        backend: ``"auto"`` or ``"torch"``: both run the PyTorch reference, on any device.
            ``"triton"`` raises ``ValueError``: the kernels are 2-D only.

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
    check_choice("backend", backend, BACKENDS)
    if backend == "triton":
        raise ValueError("backend='triton' runs 2-D (N, C, H, W) maps only; 3-D SSIM runs on "
                         "backend='torch' or 'auto' (the PyTorch reference, on any device)")
    ssim_map = reference.ssim_map(x, y, settings)
    if reduction == "none":
        return ssim_map
    return reduce_ssim(ssim_map.mean(dim=(-3, -2, -1)), reduction)
