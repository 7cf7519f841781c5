"""Pure-PyTorch SSIM: the ground truth every kernel is checked against, and the CPU backend.

Pad, shift each plane by a constant (see below), form the moment maps ``x, y, x^2, y^2,
xy`` (``x^2 + y^2`` as one map for the standard SSIM, which needs only the sum of the
variances) stacked along the batch, filter them all with the separable Gaussian (one
depthwise convolution per axis, or one 2-D convolution on small float32 planes;
channels-last for float32 on the CPU, where oneDNN runs it fastest) and combine them per
pixel. A forward that no backward will follow does this block by block of rows, so that
the blocks reuse each other's memory. Half-precision inputs are computed in float32,
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
import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from ._options import SSIMSettings, cached_tensors, gaussian_window, result_dtype

# Pixels per side of the grid whose median is a plane's shift.
_SHIFT_SAMPLES = 4

# Components computed by the square-root-free formula, which needs only var_x + var_y.
_SQRT_FREE = ("lcs", "cs")

# A forward without gradient goes by blocks of rows with about this many bytes of filtered
# maps, so that blocks reuse each other's memory instead of faulting fresh memory in, and
# the combining steps work on cached maps. A block recomputes the window's k - 1 rows of
# halo, so it has at least this many times k - 1 rows (wide maps with many channels: fewer,
# larger blocks rather than one-row blocks that redo the halo many times over).
_BLOCK_BYTES = 2 << 20
_MIN_BLOCK_HALOS = 4

# Planes of at most this many (padded) pixels are filtered, in float32 on the CPU, by one
# 2-D convolution instead of one per axis.
_SMALL_PLANE = 1024


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
        # Decided here: inside a Function grad mode is off, and needs_input_grad is set under
        # no_grad too, where no backward can follow.
        for_backward = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
        if not for_backward:
            # No graph to record: the forward alone, without the Function's bookkeeping.
            return _state_kind(settings)(x.to(compute), y.to(compute), settings, for_backward=False).value
        return _SSIMMap.apply(x.to(compute), y.to(compute), settings)


def _state_kind(settings: SSIMSettings) -> type[_ShiftedPair]:
    return _SqrtFreeSSIM if settings.components in _SQRT_FREE else _GenericSSIM


class _SSIMMap(torch.autograd.Function):
    """SSIM map with the analytic two-stencil backward (inputs already in the compute dtype)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, settings: SSIMSettings) -> torch.Tensor:
        state = _state_kind(settings)(x, y, settings, for_backward=True)
        value = state.value
        # The output goes through save_for_backward: held on ctx it would form a reference
        # cycle (output -> grad_fn -> ctx -> output), freed only by the garbage collector.
        del state.value
        ctx.settings = settings
        ctx.state = state
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
                recomputed = _GenericSSIM(x, y, ctx.settings, for_backward=True).value
                grads = iter(torch.autograd.grad(recomputed, inputs, grad, create_graph=True))
            return (next(grads) if need_x else None), (next(grads) if need_y else None), None
        return (*ctx.state.input_gradients(grad, value, need_x, need_y), None)


class _ShiftedPair:
    """Padded, per-plane shifted inputs ``x~, y~``, and the way from statistics' gradients back to the inputs.

    ``x~`` and ``y~`` are one ``2N`` batch (one call pads, shifts, squares and filters
    both), the head of ``stack``, a ``(maps * N, C, ...)`` tensor whose other
    ``N``-groups the subclass fills with the product maps to filter (:meth:`fill_products`):
    all maps go through the filter together. When autograd must record the
    construction (double backward), ``stack`` is None and the subclass concatenates instead
    of writing. A subclass that sets ``by_row_blocks`` builds no stack for a forward without
    backward: it stacks, filters and combines block by block of rows of ``padded``.
    """

    by_row_blocks = False

    def __init__(self, x: torch.Tensor, y: torch.Tensor, settings: SSIMSettings, maps: int,
                 for_backward: bool) -> None:
        self.settings = settings
        self.maps = maps
        self.input_shape = x.shape
        self.taps = gaussian_window(settings, x.dtype, x.device)
        both = torch.cat((x, y))
        self.shifts = plane_shifts(both)
        # Pad first: zeros padding means zeros in the input, not in the shifted input.
        padded = _pad(both, settings)
        if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
            self.stack = None
            self.pair = padded - self.shifts
            self.x, self.y = self.pair.split(x.shape[0])
        elif for_backward or not self.by_row_blocks:
            self.stack = self.new_stack(padded)
            self.x, self.y = self.stack.split(x.shape[0])[:2]
        else:
            self.padded = padded

    def new_stack(self, padded: torch.Tensor) -> torch.Tensor:
        """The ``(maps * N, C, rows, ...)`` stack of ``padded`` (the padded inputs, or a block of
        their rows): ``x~`` and ``y~`` shifted into it, then the subclass's products."""
        n = self.input_shape[0]
        stack = _empty_stack((self.maps * n, *padded.shape[1:]), padded)
        torch.sub(padded, self.shifts, out=stack[:2 * n])
        self.fill_products(stack, n)
        return stack

    def fill_products(self, stack: torch.Tensor, n: int) -> None:
        """Write the product maps into ``stack`` after its first ``2 n`` maps, ``x~`` and ``y~``."""
        raise NotImplementedError

    def coefficients(self, need_x: bool, need_y: bool, shared_square: bool) -> _Coefficients:
        """Uninitialised coefficient maps on the output grid for the subclass to write, views of
        one stack that :meth:`gradients_from_statistics` filters in one pass: ``mean_x`` (if
        ``need_x``), ``mean_y`` (if ``need_y``), ``square_x`` and ``square_y`` for the inputs
        that need a gradient (one map for both when ``shared_square``) and ``cross``. Returned,
        not kept on the state: under ``torch.compile`` a backward may not set attributes."""
        names = ["mean_x"] * need_x + ["mean_y"] * need_y + \
                (["square"] if shared_square else ["square_x"] * need_x + ["square_y"] * need_y) + ["cross"]
        n, sides = self.input_shape[0], self.settings.output_size(*self.input_shape[2:])
        stack = _empty_stack((len(names) * n, self.input_shape[1], *sides), self.shifts)
        maps = dict(zip(names, stack.split(n)))
        if shared_square:
            maps["square_x"] = maps["square_y"] = maps["square"]
        return _Coefficients(stack, names, maps)

    def gradients_from_statistics(self, coefficients: _Coefficients, need_x: bool, need_y: bool
                                  ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Input gradients from the coefficient maps written into :meth:`coefficients`.

        They are the loss's derivatives with respect to ``G x~`` (``mean_x``), ``G x~^2``
        (``square_x``), ``G x~y~`` (``cross``) and likewise for ``y~`` on the output grid; then
        ``d/dx~ = G^T mean_x + 2 x~ G^T square_x + y~ G^T cross`` and the adjoint of the padding
        gives ``d/dx``. All maps go through the adjoint filter in one pass.
        """
        filtered = dict(zip(coefficients.names,
                            _filter(coefficients.stack, self.taps, full=True).split(self.input_shape[0])))
        square = {"x": filtered.get("square_x", filtered.get("square")),
                  "y": filtered.get("square_y", filtered.get("square"))}
        grads = iter(_pad_adjoint(torch.addcmul(filtered[f"mean_{me}"], own, square[me], value=2)
                                  .addcmul_(other, filtered["cross"]), self.input_shape, self.settings)
                     for me, own, other in [("x", self.x, self.y)] * need_x + [("y", self.y, self.x)] * need_y)
        return (next(grads) if need_x else None), (next(grads) if need_y else None)


class _Coefficients(NamedTuple):
    """The backward's coefficient maps: ``stack`` holds the maps ``names`` in that order,
    ``maps`` the views to write by name."""

    stack: torch.Tensor
    names: list[str]
    maps: dict[str, torch.Tensor]


class _SqrtFreeSSIM(_ShiftedPair):
    """``"lcs"`` or ``"cs"``: ``S = l * (2 cov + C2) / (var_x + var_y + C2)``, from four filtered maps.

    Only ``var_x + var_y`` enters, so ``x~^2 + y~^2`` is filtered as one map; the derivatives
    with respect to the statistics are written out (see the design notes).
    """

    by_row_blocks = True

    def __init__(self, x: torch.Tensor, y: torch.Tensor, settings: SSIMSettings, for_backward: bool) -> None:
        super().__init__(x, y, settings, maps=4, for_backward=for_backward)
        if for_backward:
            self.value = self.combine(_filter(self.stack, self.taps), keep=True)
            return
        # Forward only: stack, filter and combine block by block of output rows, each block
        # small enough to stay in cache and to be reused by the next (no page faults).
        padded = self.__dict__.pop("padded")
        n, sides = x.shape[0], settings.output_size(*x.shape[2:])
        blocks = _row_blocks((n, x.shape[1], *sides), x.element_size(), maps=4,
                             halo=settings.window_size - 1)
        if len(blocks) == 1:
            self.value = self.combine(_filter(self.new_stack(padded), self.taps))
            return
        self.value = _empty_stack((n, x.shape[1], *sides), x)
        for rows in blocks:
            halo = padded[:, :, rows.start:rows.stop + padded.shape[2] - sides[0]]
            self.combine(_filter(self.new_stack(halo), self.taps), out=self.value[:, :, rows])

    def fill_products(self, stack: torch.Tensor, n: int) -> None:
        pair, (x, y, squares, cross) = stack[:2 * n], stack.split(n)
        # x~^2 and y~^2 in one product (into the squares and cross groups), then their sum,
        # each product rounded (no fused multiply-add): S(x, y) == S(y, x) bit for bit.
        torch.mul(pair, pair, out=stack[2 * n:])
        squares.add_(cross)
        torch.mul(x, y, out=cross)

    def combine(self, filtered: torch.Tensor, keep: bool = False,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """SSIM from the filtered maps ``(means, E[x~^2 + y~^2], E[x~ y~])`` (or a block of their
        rows), into ``out`` if given. With ``keep`` the statistics the backward needs are kept."""
        n, settings = filtered.shape[0] // 4, self.settings
        # Shifted means m, n; the filter output is a fresh tensor, so it is updated in place.
        m, n_, e_sq, e_xy = filtered.split(n)
        # m^2 + n^2 as 2 m n + (m - n)^2, with m n rounded once and shared with A2: x == y
        # gives m == n and E[x~^2 + y~^2] == 2 E[x~y~], so B2 == A2 exactly, SSIM exactly 1.
        mean_product = m * n_
        difference = m - n_
        a2 = e_xy.sub_(mean_product).mul_(2).add_(settings.c2)
        b2 = e_sq.sub_(mean_product, alpha=2).add_(settings.c2).addcmul_(difference, difference, value=-1)
        value = torch.div(a2, b2, out=out)
        luminance = None
        if keep:
            self.m, self.n, self.a2, self.b2 = m, n_, a2, b2
        if "l" in settings.components:
            # The shifts added back: in place (m and n become the means) unless the backward
            # needs m and n.
            if keep:
                mu_x, mu_y = (filtered[:2 * n] + self.shifts).split(n)
            else:
                mu_x, mu_y = m, n_
                filtered[:2 * n].add_(self.shifts)
            # B1 = mu_x^2 + mu_y^2 + C1 as (mu_x - mu_y)^2 + A1, A1 = 2 mu_x mu_y + C1: fewer
            # passes over the maps, and x == y gives B1 == A1, a luminance of exactly 1. Written
            # over the spent temporaries.
            a1 = torch.mul(mu_x, mu_y, out=mean_product).mul_(2).add_(settings.c1)
            difference = torch.sub(mu_x, mu_y, out=difference)
            b1 = torch.addcmul(a1, difference, difference, out=difference)
            luminance = a1.div_(b1)
            value.mul_(luminance)
            if keep:
                self.mu_x, self.mu_y, self.b1 = mu_x, mu_y, b1
        if keep:
            self.luminance = luminance
        return value

    def input_gradients(self, grad: torch.Tensor, value: torch.Tensor, need_x: bool, need_y: bool
                        ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Gradients of ``sum(grad * S)`` (``value`` is ``S``): with ``t = grad / B2``, ``dS/dcov = 2 l t``,
        ``dS/dvar = -S t``, ``dS/dmu_x = 2 A2 t (mu_y - mu_x l) / B1``."""
        # Written straight into the stack the adjoint filter reads; scalar factors applied in
        # place (x2 is exact).
        coefficients = self.coefficients(need_x, need_y, shared_square=True)
        maps = coefficients.maps
        t = grad / self.b2
        g_var = torch.mul(value, t, out=maps["square_x"]).neg_()
        if self.luminance is None:
            g_cov = torch.mul(t, 2, out=maps["cross"])
            u = None
        else:
            g_cov = torch.mul(self.luminance, t, out=maps["cross"]).mul_(2)
            u = t.mul_(self.a2).div_(self.b1).mul_(2)

        def mean_coefficient(out: torch.Tensor, m: torch.Tensor, n: torch.Tensor,
                             mu_own: Optional[torch.Tensor], mu_other: Optional[torch.Tensor]) -> None:
            # Through var = E[x~^2] - m^2 and cov = E[x~y~] - m n (shifted means m, n).
            coefficient = torch.mul(m, g_var, out=out).mul_(-2).addcmul_(n, g_cov, value=-1)
            if u is not None:
                coefficient.addcmul_(u, torch.addcmul(mu_other, mu_own, self.luminance, value=-1))

        mu_x, mu_y = (self.mu_x, self.mu_y) if u is not None else (None, None)
        if need_x:
            mean_coefficient(maps["mean_x"], self.m, self.n, mu_x, mu_y)
        if need_y:
            mean_coefficient(maps["mean_y"], self.n, self.m, mu_y, mu_x)
        return self.gradients_from_statistics(coefficients, need_x, need_y)


class _GenericSSIM(_ShiftedPair):
    """Any components, from five filtered maps; plain autograd-differentiable operations."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, settings: SSIMSettings, for_backward: bool) -> None:
        super().__init__(x, y, settings, maps=5, for_backward=for_backward)
        n = x.shape[0]
        if self.stack is None:
            filtered = _filter(torch.cat([self.pair, self.pair * self.pair, self.x * self.y]), self.taps)
        else:
            filtered = _filter(self.stack, self.taps)
        means, e_xx, e_yy, e_xy = filtered.split([2 * n, n, n, n])
        self.m, self.n = means.split(n)
        self.statistics = (*(means + self.shifts).split(n), e_xx - self.m * self.m,
                           e_yy - self.n * self.n, e_xy - self.m * self.n)
        self.value = ssim_from_moments(*self.statistics, settings)

    def fill_products(self, stack: torch.Tensor, n: int) -> None:
        pair, (x, y, *_, cross) = stack[:2 * n], stack.split(n)
        torch.mul(pair, pair, out=stack[2 * n:4 * n])
        torch.mul(x, y, out=cross)

    def input_gradients(self, grad: torch.Tensor, value: torch.Tensor, need_x: bool, need_y: bool
                        ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Gradients of ``sum(grad * S)``, the per-pixel derivatives found by autograd (``value`` unused)."""
        with torch.enable_grad():
            statistics = [t.detach().requires_grad_() for t in self.statistics]
            value = ssim_from_moments(*statistics, self.settings)
            g_mu_x, g_mu_y, g_var_x, g_var_y, g_cov = torch.autograd.grad(
                value, statistics, grad, materialize_grads=True)
        # Through var = E[x~^2] - m^2 and cov = E[x~y~] - m n (shifted means m, n).
        coefficients = self.coefficients(need_x, need_y, shared_square=False)
        maps = coefficients.maps
        if need_x:
            torch.sub(g_mu_x, 2 * self.m * g_var_x, out=maps["mean_x"]).addcmul_(self.n, g_cov, value=-1)
        if need_y:
            torch.sub(g_mu_y, 2 * self.n * g_var_y, out=maps["mean_y"]).addcmul_(self.m, g_cov, value=-1)
        for name, statistic in (("square_x", g_var_x), ("square_y", g_var_y), ("cross", g_cov)):
            if name in maps:
                maps[name].copy_(statistic)
        return self.gradients_from_statistics(coefficients, need_x, need_y)


def plane_shifts(planes: torch.Tensor) -> torch.Tensor:
    """Per-plane constants near the planes' values, ``(N, C, 1, 1)`` (``(N, C, 1, 1, 1)`` for
    volumes): what every backend subtracts before the moments.

    The median of a strided grid of at most 4 pixels per side, detached (SSIM does not
    depend on it); a non-finite median (a plane mostly NaN or infinite) becomes 0 so that
    non-finite pixels stay local.
    """
    sides = planes.shape[2:]
    grid = (..., *(slice(None, None, -(-side // _SHIFT_SAMPLES)) for side in sides))
    median = planes[grid].detach().flatten(2).nanmedian(dim=-1).values
    median = torch.nan_to_num(median, nan=0.0, posinf=0.0, neginf=0.0)
    return median.view(*median.shape, *(1,) * len(sides))


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


def _empty_stack(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Uninitialised ``shape`` tensor, ``(batch, C, ...)``, for maps stacked along the batch,
    with ``like``'s dtype and device, laid out so that each stacked map (a slice along the
    batch) is dense.

    Channels-last for float32 2-D maps on the CPU: oneDNN's depthwise convolutions then need
    no layout reorder and run about 2x faster than on NCHW maps (measured,
    benchmarks/README.md). Contiguous otherwise: float64 and volumes run PyTorch's own
    convolutions, which are slower channels-last.
    """
    channels_last = like.dtype == torch.float32 and len(shape) == 4 and like.device.type == "cpu"
    return torch.empty(shape, dtype=like.dtype, device=like.device,
                       memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _row_blocks(shape: tuple[int, ...], itemsize: int, maps: int, halo: int) -> list[slice]:
    """Blocks of the rows (dimension 2) of an output of ``shape`` whose ``maps`` filtered maps
    take about :data:`_BLOCK_BYTES`, at least :data:`_MIN_BLOCK_HALOS` times ``halo`` rows:
    one block when the whole output is that small."""
    row_bytes = maps * itemsize * math.prod(shape) // shape[2]
    rows = max(1, _BLOCK_BYTES // row_bytes, _MIN_BLOCK_HALOS * halo)
    return [slice(start, min(start + rows, shape[2])) for start in range(0, shape[2], rows)]


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
    if (not full and dims == 2 and maps.dtype == torch.float32 and maps.device.type == "cpu"
            and maps.shape[2] * maps.shape[3] <= _SMALL_PLANE):
        # oneDNN (float32 on the CPU) spends ~50 us per convolution call whatever the size:
        # on small planes one 2-D convolution (k^2 taps) beats two 1-D ones. Not for the
        # adjoint, nor for float64 (PyTorch's own convolutions): there it is slower
        # (measured, benchmarks/README.md).
        return F.conv2d(maps, _square_weight(taps, channels), groups=channels)
    for axis, weight in enumerate(_dense_weights(taps, channels, dims)):
        if dims == 3:
            maps = (F.conv_transpose3d if full else F.conv3d)(maps, weight, groups=channels)
        else:
            padding = [0, 0]
            padding[axis] = full_padding if full else 0
            maps = F.conv2d(maps, weight, padding=padding, groups=channels)
    return maps


@cached_tensors
def _dense_weights(taps: torch.Tensor, channels: int, dims: int) -> tuple[torch.Tensor, ...]:
    """Depthwise weights along each spatial axis, ``(channels, 1, k, 1)`` and ``(channels, 1, 1, k)``
    in 2-D, cached per (cached) taps tensor, channel count and number of axes."""
    shapes = [[1] * dims for _ in range(dims)]
    for axis, shape in enumerate(shapes):
        shape[axis] = -1
    return tuple(taps.view(1, 1, *shape).repeat(channels, 1, *(1,) * dims) for shape in shapes)


@cached_tensors
def _square_weight(taps: torch.Tensor, channels: int) -> torch.Tensor:
    """Depthwise 2-D weight ``(channels, 1, k, k)``, the outer product of the taps, cached per
    (cached) taps tensor and channel count."""
    return torch.outer(taps, taps).expand(channels, 1, -1, -1).contiguous()


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
