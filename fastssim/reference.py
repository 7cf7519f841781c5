"""Pure-PyTorch SSIM: the ground truth every kernel is checked against, and the CPU backend.

Pad, shift each plane by a constant (see below), form the moment maps ``x, y, x^2, y^2,
xy`` (``x^2 + y^2`` as one map for the standard SSIM, which needs only the sum of the
variances) stacked along the batch, filter them all with the separable Gaussian (one
depthwise convolution per axis; channels-last for float32 on the CPU, where oneDNN runs
it fastest) and combine them per pixel. Half-precision inputs are computed in float32,
float64 in float64, with autocast disabled so the statistics never drop to half precision.

Exact for any offset: ``E[x^2] - mu^2`` cancels catastrophically when the mean is far
larger than the spread (inputs at 1000 with data range 1 lose every digit in float32).
Each plane is therefore shifted by a constant ``k`` (the median of a small grid of its
pixels: a data value, robust to outliers and to NaN) before the moments are formed;
variances and covariance do not change under a shift, and ``k`` is added back to the
means. SSIM does not depend on ``k``, so it is a constant for differentiation.

The gradient is the analytic one (see the design notes): the per-pixel derivatives of
SSIM with respect to the local statistics, then the adjoint of the Gaussian filter over
three coefficient maps per input (the same symmetric filter over zero-extended maps) and
the adjoint of the padding, instead of autograd through five filters. Double backward
differentiates the plain autograd formula.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Optional

import torch
import torch.nn.functional as F

from ._options import SSIMSettings, gaussian_window, result_dtype

# Pixels per side of the grid whose median is a plane's shift.
_SHIFT_SAMPLES = 8

# Components computed by the square-root-free formula, which needs only var_x + var_y.
_SQRT_FREE = ("lcs", "cs")


def ssim_map(x: torch.Tensor, y: torch.Tensor, settings: SSIMSettings) -> torch.Tensor:
    """Per-pixel SSIM of two validated ``(N, C, H, W)`` maps, or per-voxel of ``(N, C, D, H, W)`` volumes.

    The window is the outer product of 1-D Gaussians along every spatial axis, and
    ``settings.padding`` applies to every axis alike.

    Returns:
        ``(N, C, *sides)`` in float64 for float64 input and float32 otherwise, where
        ``sides`` is ``settings.output_size`` of the input's spatial size.
    """
    compute = result_dtype(x.dtype)
    # Entering autocast costs more than a small map's SSIM: only switch it off when it is on.
    enabled = torch.is_autocast_enabled(x.device.type)
    with torch.autocast(device_type=x.device.type, enabled=False) if enabled else contextlib.nullcontext():
        return _SSIMMap.apply(x.to(compute), y.to(compute), settings)


class _SSIMMap(torch.autograd.Function):
    """SSIM map with the analytic two-stencil backward (inputs already in the compute dtype)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, settings: SSIMSettings) -> torch.Tensor:
        kind = _SqrtFreeSSIM if settings.components in _SQRT_FREE else _GenericSSIM
        state = kind(x, y, settings)
        value = state.value
        # The output goes through save_for_backward: held on ctx it would form a reference
        # cycle (output -> grad_fn -> ctx -> output), freed only by the garbage collector.
        del state.value
        ctx.settings = settings
        ctx.state = state if any(ctx.needs_input_grad) else None
        ctx.save_for_backward(x, y, value)
        return value

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], None]:
        x, y, value = ctx.saved_tensors
        need_x, need_y = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():
            # create_graph=True: differentiate the plain autograd formula, which autograd
            # can differentiate again.
            inputs = [t for t, need in ((x, need_x), (y, need_y)) if need]
            with torch.enable_grad():
                recomputed = _GenericSSIM(x, y, ctx.settings).value
                grads = iter(torch.autograd.grad(recomputed, inputs, grad, create_graph=True))
            return (next(grads) if need_x else None), (next(grads) if need_y else None), None
        return (*ctx.state.input_gradients(grad, value, need_x, need_y), None)


class _ShiftedPair:
    """Padded, per-plane shifted inputs ``x~, y~``, and the way from statistics' gradients back to the inputs.

    ``pair`` holds ``x~`` then ``y~`` as one ``2N`` batch (one call pads, shifts, squares and
    filters both). It is the head of ``stack``, a ``(maps * N, C, ...)`` tensor whose other
    ``N``-groups, ``products``, the subclass fills with the product maps to filter: all maps go
    through one depthwise convolution per axis. When autograd must record the construction
    (double backward), ``stack`` is None and the subclass concatenates instead of writing.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, settings: SSIMSettings, maps: int) -> None:
        self.settings = settings
        self.input_shape = x.shape
        self.taps = gaussian_window(settings, x.dtype, x.device)
        both = torch.cat((x, y))
        self.shifts = plane_shifts(both)
        # Pad first: zeros padding means zeros in the input, not in the shifted input.
        padded = _pad(both, settings)
        if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
            self.stack = None
            self.pair = padded - self.shifts
        else:
            self.stack = _empty_stack(padded, maps * x.shape[0])
            self.pair = torch.sub(padded, self.shifts, out=self.stack[:2 * x.shape[0]])
            self.products = self.stack[2 * x.shape[0]:].split(x.shape[0])
        self.x, self.y = self.pair.split(x.shape[0])

    def gradients_from_statistics(self, mean_x: Optional[torch.Tensor], mean_y: Optional[torch.Tensor],
                                  square_x: torch.Tensor, square_y: torch.Tensor, cross: torch.Tensor,
                                  need_x: bool, need_y: bool
                                  ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Input gradients from the gradients with respect to the filtered maps.

        ``mean_*``, ``square_*`` and ``cross`` are the loss's derivatives with respect to
        ``G x~``, ``G x~^2`` and ``G x~y~`` on the output grid; then
        ``d/dx~ = G^T mean_x + 2 x~ G^T square_x + y~ G^T cross`` and the adjoint of the
        padding gives ``d/dx``. A map passed for both inputs is filtered once; ``mean_*`` is
        ``None`` for an input that needs no gradient.
        """
        wanted = ([(self.x, self.y, mean_x, square_x)] if need_x else []) + \
                 ([(self.y, self.x, mean_y, square_y)] if need_y else [])
        unique: list[torch.Tensor] = []
        for map_ in [m for _, _, mean, square in wanted for m in (mean, square)] + [cross]:
            if not any(map_ is seen for seen in unique):
                unique.append(map_)
        stack = _empty_stack(unique[0], len(unique) * unique[0].shape[0])
        torch.cat(unique, out=stack)
        filtered = dict(zip(map(id, unique), _filter(stack, self.taps, full=True).split(unique[0].shape[0])))
        grads = iter(_pad_adjoint(torch.addcmul(filtered[id(mean)], own, filtered[id(square)], value=2)
                                  .addcmul_(other, filtered[id(cross)]), self.input_shape, self.settings)
                     for own, other, mean, square in wanted)
        return (next(grads) if need_x else None), (next(grads) if need_y else None)


class _SqrtFreeSSIM(_ShiftedPair):
    """``"lcs"`` or ``"cs"``: ``S = l * (2 cov + C2) / (var_x + var_y + C2)``, from four filtered maps.

    Only ``var_x + var_y`` enters, so ``x~^2 + y~^2`` is filtered as one map; the derivatives
    with respect to the statistics are written out (see the design notes).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, settings: SSIMSettings) -> None:
        super().__init__(x, y, settings, maps=4)
        n, c2 = x.shape[0], settings.c2
        squares, cross = self.products
        # x~^2 and y~^2 in one product (into the squares and cross groups), then their sum,
        # each product rounded (no fused multiply-add): S(x, y) == S(y, x) bit for bit.
        torch.mul(self.pair, self.pair, out=self.stack[2 * n:])
        squares.add_(cross)
        torch.mul(self.x, self.y, out=cross)
        # Shifted means m, n; the filter output is a fresh tensor, so it is updated in place.
        means, e_sq, e_xy = _filter(self.stack, self.taps).split([2 * n, n, n])
        self.m, self.n = means.split(n)
        # m^2 + n^2 as (m - n)^2 + 2 m n, with m n rounded once and shared with A2 (no fused
        # multiply-add): x == y gives B2 == A2 exactly, SSIM exactly 1.
        mean_product = self.m * self.n
        difference = self.m - self.n
        self.a2 = e_xy.sub_(mean_product).mul_(2).add_(c2)
        self.b2 = e_sq.sub_(difference.mul_(difference).add_(mean_product, alpha=2)).add_(c2)
        self.value = self.a2 / self.b2
        self.luminance = None
        if "l" in settings.components:
            self.mu_x, self.mu_y = (means + self.shifts).split(n)
            # B1 = mu_x^2 + mu_y^2 + C1 as (mu_x - mu_y)^2 + A1, A1 = 2 mu_x mu_y + C1: fewer
            # passes over the maps, and x == y gives B1 == A1, a luminance of exactly 1.
            a1 = torch.mul(self.mu_x, self.mu_y).mul_(2).add_(settings.c1)
            difference = self.mu_x - self.mu_y
            self.b1 = difference.mul_(difference).add_(a1)
            self.luminance = a1.div_(self.b1)
            self.value.mul_(self.luminance)

    def input_gradients(self, grad: torch.Tensor, value: torch.Tensor, need_x: bool, need_y: bool
                        ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Gradients of ``sum(grad * S)`` (``value`` is ``S``): with ``t = grad / B2``, ``dS/dcov = 2 l t``,
        ``dS/dvar = -S t``, ``dS/dmu_x = 2 A2 t (mu_y - mu_x l) / B1``."""
        # Scalar factors applied in place: one pass fewer over the map each, same values (x2 is exact).
        t = grad / self.b2
        g_var = torch.mul(value, t).neg_()
        g_cov = 2 * t if self.luminance is None else torch.mul(self.luminance, t).mul_(2)
        u = None if self.luminance is None else torch.mul(self.a2, t).div_(self.b1).mul_(2)

        def mean_coefficient(m: torch.Tensor, n: torch.Tensor, mu_own: Optional[torch.Tensor],
                             mu_other: Optional[torch.Tensor]) -> torch.Tensor:
            # Through var = E[x~^2] - m^2 and cov = E[x~y~] - m n (shifted means m, n).
            coefficient = torch.mul(m, g_var).mul_(-2).addcmul_(n, g_cov, value=-1)
            if u is not None:
                coefficient.addcmul_(u, torch.addcmul(mu_other, mu_own, self.luminance, value=-1))
            return coefficient

        mu_x, mu_y = (self.mu_x, self.mu_y) if u is not None else (None, None)
        mean_x = mean_coefficient(self.m, self.n, mu_x, mu_y) if need_x else None
        mean_y = mean_coefficient(self.n, self.m, mu_y, mu_x) if need_y else None
        return self.gradients_from_statistics(mean_x, mean_y, g_var, g_var, g_cov, need_x, need_y)


class _GenericSSIM(_ShiftedPair):
    """Any components, from five filtered maps; plain autograd-differentiable operations."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, settings: SSIMSettings) -> None:
        super().__init__(x, y, settings, maps=5)
        n = x.shape[0]
        if self.stack is None:
            stack = torch.cat([self.pair, self.pair * self.pair, self.x * self.y])
        else:
            squares, cross = self.stack[2 * n:4 * n], self.products[2]
            torch.mul(self.pair, self.pair, out=squares)
            torch.mul(self.x, self.y, out=cross)
            stack = self.stack
        means, e_xx, e_yy, e_xy = _filter(stack, self.taps).split([2 * n, n, n, n])
        self.m, self.n = means.split(n)
        self.statistics = (*(means + self.shifts).split(n), e_xx - self.m * self.m,
                           e_yy - self.n * self.n, e_xy - self.m * self.n)
        self.value = ssim_from_moments(*self.statistics, settings)

    def input_gradients(self, grad: torch.Tensor, value: torch.Tensor, need_x: bool, need_y: bool
                        ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Gradients of ``sum(grad * S)``, the per-pixel derivatives found by autograd (``value`` unused)."""
        with torch.enable_grad():
            statistics = [t.detach().requires_grad_() for t in self.statistics]
            value = ssim_from_moments(*statistics, self.settings)
            g_mu_x, g_mu_y, g_var_x, g_var_y, g_cov = torch.autograd.grad(
                value, statistics, grad, materialize_grads=True)
        # Through var = E[x~^2] - m^2 and cov = E[x~y~] - m n (shifted means m, n).
        mean_x = g_mu_x - 2 * self.m * g_var_x - self.n * g_cov if need_x else None
        mean_y = g_mu_y - 2 * self.n * g_var_y - self.m * g_cov if need_y else None
        return self.gradients_from_statistics(mean_x, mean_y, g_var_x, g_var_y, g_cov, need_x, need_y)


def plane_shifts(planes: torch.Tensor) -> torch.Tensor:
    """Per-plane constants near the planes' values, ``(N, C, 1, 1)`` (``(N, C, 1, 1, 1)`` for
    volumes): what every backend subtracts before the moments.

    The median of a strided grid of at most 8 pixels per side, detached (SSIM does not
    depend on it); a non-finite median (a plane mostly NaN or infinite) becomes 0 so that
    non-finite pixels stay local.
    """
    grid = (..., *(slice(None, None, max(1, side // _SHIFT_SAMPLES)) for side in planes.shape[2:]))
    median = planes.detach()[grid].reshape(*planes.shape[:2], -1).nanmedian(dim=-1).values
    median = torch.nan_to_num(median, nan=0.0, posinf=0.0, neginf=0.0)
    return median.view(*planes.shape[:2], *(1,) * (planes.dim() - 2))


def _pad(t: torch.Tensor, settings: SSIMSettings) -> torch.Tensor:
    if settings.padding == "valid":
        return t
    return F.pad(t, (settings.radius,) * 2 * (t.dim() - 2),
                 mode="reflect" if settings.padding == "reflect" else "constant")


def _pad_adjoint(grad: torch.Tensor, input_shape: torch.Size, settings: SSIMSettings) -> torch.Tensor:
    """Gradient with respect to the input of :func:`_pad`, from the gradient of its output."""
    r, dims = settings.radius, grad.dim() - 2
    if settings.padding == "valid":
        return grad
    if settings.padding == "zeros":
        return grad[(..., *(slice(r, -r),) * dims)]
    # Fold each axis's mirrored border back onto its source pixels: padded index r - j (j in
    # 1..r) is pixel j, padded index size - 1 + r + j is pixel size - 1 - j. Slices and flips:
    # 2-3x faster on the CPU than aten's reflection_pad2d_backward (benchmarks/README.md).
    for axis in range(2, grad.dim()):
        size = input_shape[axis]
        folded = grad.narrow(axis, r, size).clone()
        folded.narrow(axis, 1, r).add_(grad.narrow(axis, 0, r).flip(axis))
        folded.narrow(axis, size - 1 - r, r).add_(grad.narrow(axis, size + r, r).flip(axis))
        grad = folded
    return grad


def _empty_stack(like: torch.Tensor, batch: int) -> torch.Tensor:
    """Uninitialised ``(batch, C, ...)`` tensor for maps shaped like ``like`` stacked along the
    batch, so that each stacked map (a slice along the batch) is dense.

    Channels-last for float32 2-D maps on the CPU: oneDNN's depthwise convolutions then need
    no layout reorder and run about 2x faster than on NCHW maps (measured,
    benchmarks/README.md). Contiguous otherwise: float64 and volumes run PyTorch's own
    convolutions, which are slower channels-last.
    """
    channels_last = like.dtype == torch.float32 and like.dim() == 4 and like.device.type == "cpu"
    return torch.empty((batch, *like.shape[1:]), dtype=like.dtype,
                       device=like.device,
                       memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _filter(maps: torch.Tensor, taps: torch.Tensor, full: bool = False) -> torch.Tensor:
    """Separable Gaussian filter of every channel of ``maps`` (2-D or 3-D): valid, or its adjoint (``full``).

    The adjoint spreads each pixel over the window, giving the zero-extended full filter.
    The Gaussian is symmetric, so for maps it is the same convolution with 2r zeros of
    padding per side (1.5-2.7x faster on the CPU than a transposed convolution, float32
    channels-last and float64 alike); for volumes the transposed convolution is faster
    (3x in float64). One depthwise convolution per axis with a dense weight: several
    times faster on the CPU than one-channel images or a stride-0 weight.
    """
    channels, dims = maps.shape[1], maps.dim() - 2
    full_padding = taps.numel() - 1
    for axis, weight in enumerate(_dense_weights(taps, channels, dims)):
        if dims == 3:
            maps = (F.conv_transpose3d if full else F.conv3d)(maps, weight, groups=channels)
        else:
            padding = [0, 0]
            padding[axis] = full_padding if full else 0
            maps = F.conv2d(maps, weight, padding=padding, groups=channels)
    return maps


@functools.lru_cache(maxsize=64)
def _dense_weights(taps: torch.Tensor, channels: int, dims: int) -> tuple[torch.Tensor, ...]:
    """Depthwise weights along each spatial axis, ``(channels, 1, k, 1)`` and ``(channels, 1, 1, k)``
    in 2-D, cached per (cached) taps tensor, channel count and number of axes."""
    shapes = [[1] * dims for _ in range(dims)]
    for axis, shape in enumerate(shapes):
        shape[axis] = -1
    return tuple(taps.view(1, 1, *shape).repeat(channels, 1, *(1,) * dims) for shape in shapes)


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
