"""Pure-PyTorch SSIM: the ground truth every kernel is checked against.

Straightforward and differentiable through autograd: pad, form the five moment maps
``x, y, x^2, y^2, xy``, filter them with the separable Gaussian (two depthwise
convolutions), and combine them per pixel. Half-precision inputs are computed in
float32, float64 in float64, with autocast disabled so the statistics never drop
to half precision.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._options import SSIMSettings, gaussian_window, result_dtype


def ssim_map(x: torch.Tensor, y: torch.Tensor, settings: SSIMSettings) -> torch.Tensor:
    """Per-pixel SSIM of two validated ``(N, C, H, W)`` maps.

    Returns:
        ``(N, C, H', W')`` in float64 for float64 input and float32 otherwise, where
        ``H' x W'`` is ``settings.output_size(H, W)``.
    """
    compute = result_dtype(x.dtype)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(compute)
        y = y.to(compute)
        r = settings.radius
        if settings.padding != "valid":
            mode = "reflect" if settings.padding == "reflect" else "constant"
            x = F.pad(x, (r, r, r, r), mode=mode)
            y = F.pad(y, (r, r, r, r), mode=mode)
        n, c, h, w = x.shape
        # One depthwise convolution over (N, 5C) channels with a dense weight: several
        # times faster on the CPU than N*5C one-channel images or a stride-0 weight.
        moments = torch.cat((x, y, x * x, y * y, x * y), dim=1)
        taps = gaussian_window(settings, compute, x.device)
        moments = F.conv2d(moments, taps.view(1, 1, -1, 1).repeat(5 * c, 1, 1, 1), groups=5 * c)
        moments = F.conv2d(moments, taps.view(1, 1, 1, -1).repeat(5 * c, 1, 1, 1), groups=5 * c)
        mu_x, mu_y, e_xx, e_yy, e_xy = moments.chunk(5, dim=1)
        return ssim_from_moments(mu_x, mu_y, e_xx - mu_x * mu_x, e_yy - mu_y * mu_y,
                                 e_xy - mu_x * mu_y, settings)


def ssim_from_moments(mu_x: torch.Tensor, mu_y: torch.Tensor, var_x: torch.Tensor,
                      var_y: torch.Tensor, cov_xy: torch.Tensor, settings: SSIMSettings) -> torch.Tensor:
    """Combine local statistics into SSIM, using only the factors in ``settings.components``.

    ``l = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)``,
    ``c = (2 s_x s_y + C2) / (var_x + var_y + C2)``, ``s = (cov + C3) / (s_x s_y + C3)``
    with ``C3 = C2 / 2``; when both ``c`` and ``s`` are used their product is the exact
    square-root-free ``(2 cov + C2) / (var_x + var_y + C2)``.
    """
    c1, c2 = settings.c1, settings.c2
    parts = settings.components
    result = torch.ones_like(mu_x)
    if "l" in parts:
        result = result * (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    if "c" in parts and "s" in parts:
        return result * (2 * cov_xy + c2) / (var_x + var_y + c2)
    if "c" in parts or "s" in parts:
        sd_x = torch.sqrt(var_x.clamp_min(0) + settings.sqrt_eps)
        sd_y = torch.sqrt(var_y.clamp_min(0) + settings.sqrt_eps)
        if "c" in parts:
            result = result * (2 * sd_x * sd_y + c2) / (var_x + var_y + c2)
        else:
            result = result * (cov_xy + c2 / 2) / (sd_x * sd_y + c2 / 2)
    return result


def ssim_map_3d(x: torch.Tensor, y: torch.Tensor, settings: SSIMSettings) -> torch.Tensor:
    """Per-voxel SSIM of two validated ``(N, C, D, H, W)`` volumes, with a separable 3-D Gaussian.

    The window is the outer product of three 1-D Gaussians of ``settings``; ``settings.padding``
    applies along depth, height and width alike.

    Returns:
        ``(N, C, D', H', W')`` in float64 for float64 input and float32 otherwise; every side
        shrinks by ``window_size - 1`` for ``"valid"`` and keeps its size otherwise.
    """
    compute = result_dtype(x.dtype)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(compute)
        y = y.to(compute)
        r = settings.radius
        if settings.padding != "valid":
            mode = "reflect" if settings.padding == "reflect" else "constant"
            x = F.pad(x, (r,) * 6, mode=mode)
            y = F.pad(y, (r,) * 6, mode=mode)
        channels = 5 * x.shape[1]
        moments = torch.cat((x, y, x * x, y * y, x * y), dim=1)
        taps = gaussian_window(settings, compute, x.device).repeat(channels, 1)
        # One depthwise pass per axis: the 3-D Gaussian is separable.
        for shape in ((-1, 1, 1), (1, -1, 1), (1, 1, -1)):
            moments = F.conv3d(moments, taps.view(channels, 1, *shape), groups=channels)
        mu_x, mu_y, e_xx, e_yy, e_xy = moments.chunk(5, dim=1)
        return ssim_from_moments(mu_x, mu_y, e_xx - mu_x * mu_x, e_yy - mu_y * mu_y,
                                 e_xy - mu_x * mu_y, settings)
