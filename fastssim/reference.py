"""Pure-PyTorch SSIM: the ground truth every kernel is checked against, and the CPU backend.

Pad, shift each plane by a constant (see below), form the five moment maps
``x, y, x^2, y^2, xy``, filter them with the separable Gaussian (two depthwise
convolutions over all of them at once), and combine them per pixel. Half-precision
inputs are computed in float32, float64 in float64, with autocast disabled so the
statistics never drop to half precision.

Exact for any offset: ``E[x^2] - mu^2`` cancels catastrophically when the mean is far
larger than the spread (inputs at 1000 with data range 1 lose every digit in float32).
Each plane is therefore shifted by a constant ``k`` (the median of a small grid of its
pixels: a data value, robust to outliers and to NaN) before the moments are formed;
variances and covariance do not change under a shift, and ``k`` is added back to the
means. SSIM does not depend on ``k``, so it is a constant for differentiation.

The gradient is the analytic one (see the design notes): the per-pixel derivatives of
SSIM with respect to the local statistics, then the same Gaussian filter (its own
adjoint) over three coefficient maps per input and the adjoint of the padding: three
filtered maps instead of autograd through five. Double backward differentiates the
plain autograd formula instead.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._options import SSIMSettings, gaussian_window, result_dtype

# Pixels per side of the grid whose median is a plane's shift.
_SHIFT_SAMPLES = 8


def ssim_map(x: torch.Tensor, y: torch.Tensor, settings: SSIMSettings) -> torch.Tensor:
    """Per-pixel SSIM of two validated ``(N, C, H, W)`` maps.

    Returns:
        ``(N, C, H', W')`` in float64 for float64 input and float32 otherwise, where
        ``H' x W'`` is ``settings.output_size(H, W)``.
    """
    compute = result_dtype(x.dtype)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _SSIMMap.apply(x.to(compute), y.to(compute), settings)


class _SSIMMap(torch.autograd.Function):
    """SSIM map with the analytic two-stencil backward (inputs already in the compute dtype)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, settings: SSIMSettings) -> torch.Tensor:
        stats = _Statistics(x, y, settings)
        ctx.settings = settings
        ctx.stats = stats if any(ctx.needs_input_grad) else None
        ctx.save_for_backward(x, y)
        return ssim_from_moments(*stats.moments(), settings)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], None]:
        x, y = ctx.saved_tensors
        need_x, need_y = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():
            # create_graph=True: differentiate the plain autograd formula, which autograd
            # can differentiate again.
            inputs = [t for t, need in ((x, need_x), (y, need_y)) if need]
            with torch.enable_grad():
                value = ssim_from_moments(*_Statistics(x, y, ctx.settings).moments(), ctx.settings)
                grads = iter(torch.autograd.grad(value, inputs, grad, create_graph=True))
            return (next(grads) if need_x else None), (next(grads) if need_y else None), None
        return (*ctx.stats.input_gradients(grad, need_x, need_y), None)


class _Statistics:
    """Local Gaussian statistics of a pair of maps, and the adjoint that maps back to the inputs."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, settings: SSIMSettings) -> None:
        self.settings = settings
        self.input_shape = x.shape
        self.taps = gaussian_window(settings, x.dtype, x.device)
        self.shift_x, self.shift_y = _plane_shift(x), _plane_shift(y)
        # Pad first: zeros padding means zeros in the input, not in the shifted input.
        self.x = _pad(x, settings) - self.shift_x
        self.y = _pad(y, settings) - self.shift_y
        xs, ys = self.x, self.y
        self.mu_x, self.mu_y, e_xx, e_yy, e_xy = (
            _filter(m, self.taps) for m in (xs, ys, xs * xs, ys * ys, xs * ys))
        self.var_x = e_xx - self.mu_x * self.mu_x
        self.var_y = e_yy - self.mu_y * self.mu_y
        self.cov = e_xy - self.mu_x * self.mu_y

    def moments(self) -> tuple[torch.Tensor, ...]:
        """Means (shift added back), variances and covariance on the output grid."""
        return (self.mu_x + self.shift_x, self.mu_y + self.shift_y, self.var_x, self.var_y, self.cov)

    def input_gradients(self, grad: torch.Tensor, need_x: bool, need_y: bool
                        ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Gradients of ``sum(grad * SSIM map)`` with respect to the unpadded inputs.

        With ``g_*`` the derivatives of that sum with respect to the statistics (found by
        autograd on the per-pixel formula, so every component choice is covered):
        ``d/dx~ = G^T (g_mu_x - 2 mu_x g_var_x - mu_y g_cov) + 2 x~ G^T g_var_x + y~ G^T g_cov``
        on the padded, shifted grid, and the adjoint of the padding back to ``x``.
        """
        with torch.enable_grad():
            statistics = [t.detach().requires_grad_() for t in self.moments()]
            value = ssim_from_moments(*statistics, self.settings)
            g_mu_x, g_mu_y, g_var_x, g_var_y, g_cov = torch.autograd.grad(
                value, statistics, grad, materialize_grads=True)
        sides = ((need_x, self.x, self.y, self.mu_x, self.mu_y, g_mu_x, g_var_x),
                 (need_y, self.y, self.x, self.mu_y, self.mu_x, g_mu_y, g_var_y))
        wanted = [side[1:] for side in sides if side[0]]
        coefficients = [map_ for _, _, mu, mu_other, g_mu, g_var in wanted
                        for map_ in (g_mu - 2 * mu * g_var - mu_other * g_cov, g_var)]
        *filtered, filtered_cov = (_filter(m, self.taps, full=True) for m in (*coefficients, g_cov))
        grads = iter(_pad_adjoint(filtered[2 * i] + 2 * own * filtered[2 * i + 1] + other * filtered_cov,
                                  self.input_shape, self.settings)
                     for i, (own, other, *_) in enumerate(wanted))
        return (next(grads) if need_x else None), (next(grads) if need_y else None)


def _plane_shift(t: torch.Tensor) -> torch.Tensor:
    """Per-plane constant near the plane's values: median of a strided grid of pixels, ``(N, C, 1, 1)``.

    Detached (SSIM does not depend on it); a non-finite median (a plane mostly NaN or
    infinite) becomes 0 so that non-finite pixels stay local.
    """
    height, width = t.shape[-2:]
    grid = t.detach()[..., ::max(1, height // _SHIFT_SAMPLES), ::max(1, width // _SHIFT_SAMPLES)]
    median = grid.reshape(*t.shape[:2], -1).nanmedian(dim=-1).values
    return torch.where(median.isfinite(), median, 0).view(*t.shape[:2], 1, 1)


def _pad(t: torch.Tensor, settings: SSIMSettings) -> torch.Tensor:
    if settings.padding == "valid":
        return t
    r = settings.radius
    return F.pad(t, (r, r, r, r), mode="reflect" if settings.padding == "reflect" else "constant")


def _pad_adjoint(grad: torch.Tensor, input_shape: torch.Size, settings: SSIMSettings) -> torch.Tensor:
    """Gradient with respect to the input of :func:`_pad`, from the gradient of its output."""
    r = settings.radius
    if settings.padding == "valid":
        return grad
    if settings.padding == "zeros":
        return grad[..., r:-r, r:-r]
    # Folds each mirrored border pixel's gradient back onto its source pixel.
    return torch.ops.aten.reflection_pad2d_backward(grad, torch.empty(input_shape, dtype=grad.dtype,
                                                                      device=grad.device), [r] * 4)


def _filter(maps: torch.Tensor, taps: torch.Tensor, full: bool = False) -> torch.Tensor:
    """Separable Gaussian filter of every channel of ``maps``: valid, or ``full`` (zero-extended).

    The full filter is the adjoint of the valid one (the taps are symmetric). One depthwise
    convolution per direction with a dense weight: several times faster on the CPU than
    one-channel images or a stride-0 weight. Called per moment map rather than on all five
    stacked: a smaller working set stays in cache (2-3x faster on a busy CPU), and no copy.
    """
    channels, pad = maps.shape[1], len(taps) - 1 if full else 0
    maps = F.conv2d(maps, taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), padding=(pad, 0), groups=channels)
    return F.conv2d(maps, taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), padding=(0, pad), groups=channels)


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
