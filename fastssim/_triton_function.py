"""The Triton SSIM operator: ``torch.library`` custom ops with autograd registered.

Registered as custom ops so ``torch.compile(fullgraph=True)`` treats the kernels as one
opaque node with a known output shape. The ops take their arguments in the kernels' own
terms (taps, c1, c2, padding code, component flags, per-pixel flag, normalisation code),
converted from ``SSIMSettings`` once per call by :func:`ssim_levels_triton`.

Two gradient paths:
- lean (scalar reductions, gradient to x only): the forward launch also computes
  ``D = d mean_plane(SSIM) / dx'`` (x' the normalised x) in the input dtype and the plane
  sums the min/max gradient needs; backward only scales D per plane and adds the terms
  through the min and the max (one elementwise launch per level).
- general (a per-pixel upstream gradient, or y needs a gradient): forward saves the
  inputs only; backward recomputes the statistics with the gradient kernel.
Normalisation ``x' = (x - low) * scale`` happens inside the kernels; ``low``, ``scale`` and
the max are computed without autograd (one ``aminmax`` pass per input for the per-level
scope) and their gradient is applied here, exactly (ties of the min or the max share it,
as in ``torch.amin``/``torch.amax``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from . import reference
from ._options import SSIMSettings, gaussian_window
from .kernels import ssim as kernels
from .normalize import NORMALIZE_SCOPES, RANGE_FLOOR, REDUCED_DIMS, min_max_stats

# Normalisation codes of the ops (0: none), and component flags.
NORMALIZE_CODES = {None: 0, **{scope: i + 1 for i, scope in enumerate(NORMALIZE_SCOPES)}}
_SCOPES = {code: scope for scope, code in NORMALIZE_CODES.items()}
_COMPONENT_FLAGS = {"l": 1, "c": 2, "s": 4}


def ssim_levels_triton(xs: Sequence[Tensor], ys: Sequence[Tensor], settings: SSIMSettings,
                       per_pixel: bool, normalize: Optional[str] = None) -> list[Tensor]:
    """Per-level SSIM maps (``per_pixel``) or per-channel means through the Triton kernels.

    ``normalize`` (``None``, ``"level"``, ``"sample"`` or ``"channel"``) min-max normalises
    each level inside the kernels. Levels of different dtypes are promoted to a common one.
    """
    common = xs[0].dtype
    for t in (*xs, *ys):
        common = torch.promote_types(common, t.dtype)
    check_supported(settings, common, spatial_dims=2)
    if any(t.device != xs[0].device for t in (*xs, *ys)):
        raise ValueError("all levels must share one device for backend='triton', got "
                         f"{sorted({str(t.device) for t in (*xs, *ys)})}")
    xs = [_int32_columns(x.to(common)) for x in xs]
    ys = [_int32_columns(y.to(common)) for y in ys]
    need_x = any(x.requires_grad for x in xs)
    need_y = any(y.requires_grad for y in ys)
    # The forward computes the gradient when backward will only need to scale it.
    lean = torch.is_grad_enabled() and need_x and not need_y and not per_pixel
    out = torch.ops.fastssim.ssim_levels(xs, ys, *kernel_terms(settings, xs[0].device), per_pixel,
                                         NORMALIZE_CODES[normalize], lean)
    return out[:len(xs)]


def check_supported(settings: SSIMSettings, dtype: torch.dtype, spatial_dims: int) -> None:
    """Refuse what the kernels do not cover (``kernels.CAPABILITIES``), saying what does."""
    caps = kernels.CAPABILITIES
    limit = caps.radius_limit(spatial_dims)
    if settings.radius > limit:
        what = "kernels" if spatial_dims == 2 else "volume kernels"
        raise ValueError(f"window_size={settings.window_size} is larger than the Triton {what} "
                         f"support ({2 * limit + 1}); use backend='torch' or 'auto'")
    if dtype not in caps.dtypes:
        raise TypeError(f"backend='triton' supports float32, float16 and bfloat16 inputs, got "
                        f"{dtype}; use backend='torch' (or 'auto') for float64")


def kernel_terms(settings: SSIMSettings, device: torch.device) -> tuple:
    """``SSIMSettings`` in the ops' (the kernels') terms: taps, c1, c2, sqrt_eps, padding code,
    component flags."""
    return (gaussian_window(settings, torch.float32, device), settings.c1, settings.c2,
            settings.sqrt_eps, kernels.PADDING_CODES[settings.padding],
            sum(_COMPONENT_FLAGS[ch] for ch in settings.components))


def _int32_columns(t: Tensor) -> Tensor:
    """``t``, or a contiguous copy when its column offsets overflow the kernels' int32 column
    arithmetic (only exotic strided views of very wide maps)."""
    return t if (t.shape[-1] - 1) * abs(t.stride(-1)) < 2 ** 31 else t.contiguous()


def kernel_settings(taps: Tensor, c1: float, c2: float, sqrt_eps: float, padding: int,
                    components: int) -> kernels.KernelSettings:
    """The ops' arguments (see :func:`kernel_terms`) as the launchers' ``KernelSettings``."""
    return kernels.KernelSettings(taps, c1, c2, sqrt_eps, padding, use_l=bool(components & 1),
                                  use_c=bool(components & 2), use_s=bool(components & 4))


def _norm_values(x: Tensor, y: Tensor, scope: str) -> Tensor:
    """Per-plane ``(N, C, 6)`` float32: low, scale and max of x, then of y."""
    n, c = x.shape[:2]
    columns = [v.view(v.shape[0], v.shape[1]).expand(n, c) for t in (x, y) for v in min_max_stats(t, scope)]
    return torch.stack(columns, dim=-1).contiguous()


def plane_shift_pairs(x: Tensor, y: Tensor) -> Tensor:
    """``(N, C, 2)`` float32: each plane's (or volume's) shift of x, then of y — the
    reference's ``plane_shifts``, which the kernels subtract before the moments."""
    return torch.stack([reference.plane_shifts(t).float().view(t.shape[:2]) for t in (x, y)], dim=-1)


def _shift_values(x: Tensor, y: Tensor) -> Tensor:
    """Per-plane ``(N, C, 6)`` float32 with the shifts in the fields of x's and y's ``low``."""
    shifts = plane_shift_pairs(x, y)
    values = shifts.new_zeros(*x.shape[:2], kernels.NORM_FIELDS)
    values[..., kernels.N_LOW_X.value] = shifts[..., 0]
    values[..., kernels.N_LOW_Y.value] = shifts[..., 1]
    return values


def _plane_values(xs, ys, normalize: int) -> list[Tensor]:
    """What the kernels read per plane: normalisation values, or the shifts without it."""
    if normalize:
        return [_norm_values(x, y, _SCOPES[normalize]) for x, y in zip(xs, ys)]
    return [_shift_values(x, y) for x, y in zip(xs, ys)]


@torch.library.custom_op("fastssim::ssim_levels", mutates_args=())
def _ssim_levels(xs: list[Tensor], ys: list[Tensor], taps: Tensor, c1: float, c2: float,
                 sqrt_eps: float, padding: int, components: int, per_pixel: bool, normalize: int,
                 lean: bool) -> list[Tensor]:
    """Values per level, then (normalisation) per-level plane values, then (lean) D and sums."""
    ks = kernel_settings(taps, c1, c2, sqrt_eps, padding, components)
    plane_values = _plane_values(xs, ys, normalize)
    extra = plane_values if normalize else []
    if lean:
        values, dxs, _, sums = kernels.ssim_gradient(xs, ys, ks, need_x=True, need_y=False,
                                                     plane_values=plane_values, normalize=bool(normalize))
        return values + extra + dxs + sums
    return kernels.ssim_forward(xs, ys, ks, per_pixel, plane_values, bool(normalize)) + extra


@_ssim_levels.register_fake
def _(xs, ys, taps, c1, c2, sqrt_eps, padding, components, per_pixel, normalize, lean):
    radius = (taps.shape[0] - 1) // 2
    valid = padding == kernels.PADDING_CODES["valid"]
    out = []
    for x in xs:
        h, w = x.shape[-2:]
        shape = x.shape[:2] + ((h - 2 * radius, w - 2 * radius) if valid else (h, w)) if per_pixel else x.shape[:2]
        out.append(x.new_empty(shape, dtype=torch.float32))
    if normalize:
        out += [x.new_empty(x.shape[:2] + (kernels.NORM_FIELDS,), dtype=torch.float32) for x in xs]
    if lean:
        out += [torch.empty_like(x, memory_format=torch.contiguous_format) for x in xs]
        if normalize:
            out += [x.new_empty(x.shape[:2] + (kernels.NORM_PARTIALS,), dtype=torch.float32) for x in xs]
    return out


def _finish(d: Tensor, x: Tensor, norm: Optional[Tensor], sums: Optional[Tensor], weight: Optional[Tensor],
            scope: Optional[str], columns: slice) -> Tensor:
    """The gradient w.r.t. the raw input from ``D`` (w.r.t. the normalised one).

    ``weight`` ``(N, C)`` scales D and the D-sums per plane (the lean path's upstream
    gradient; None when D already holds it). With normalisation ``x' = (x - low) s``,
    ``s = 1 / clamp_min(max - low, RANGE_FLOOR)``: ``dx = s D`` plus, on the pixels equal to
    the min (max), the gradient through ``low`` (the max) shared among them.
    """
    if norm is None:
        if weight is None:
            return d
        values = torch.stack([weight] + [torch.zeros_like(weight)] * 4, dim=-1).contiguous()
        return kernels.finish_gradient(d, x, values, ties=False)
    low, scale, high = norm[..., columns].unbind(-1)
    sum_d, sum_dx, n_low, n_high = sums.unbind(-1)
    if weight is not None:
        sum_d, sum_dx, scale_d = sum_d * weight, sum_dx * weight, scale * weight
    else:
        scale_d = scale
    dims = tuple(d for d in REDUCED_DIMS[scope] if d < 2)
    if dims:
        sum_d, sum_dx, n_low, n_high = (t.sum(dim=dims, keepdim=True).expand_as(low)
                                        for t in (sum_d, sum_dx, n_low, n_high))
    # clamp_min passes the gradient where the range is at least the floor.
    d_scale = scale * scale * ((high - low) >= RANGE_FLOOR)
    g_low = -scale * sum_d + d_scale * sum_dx
    g_high = -d_scale * sum_dx
    values = torch.stack([scale_d, low, high, g_low / n_low, g_high / n_high], dim=-1).contiguous()
    return kernels.finish_gradient(d, x, values, ties=True)


@torch.library.custom_op("fastssim::ssim_levels_backward", mutates_args=())
def _ssim_levels_backward(xs: list[Tensor], ys: list[Tensor], grads: list[Tensor], saved: list[Tensor],
                          taps: Tensor, c1: float, c2: float, sqrt_eps: float, padding: int,
                          components: int, per_pixel: bool, normalize: int, lean: bool,
                          need_x: bool, need_y: bool) -> list[Tensor]:
    """dxs (when ``need_x``) then dys (when ``need_y``); ``saved`` is what forward returned
    beyond the values (plane values with normalisation, then D and sums on the lean path)."""
    n = len(xs)
    scope = _SCOPES[normalize]
    norms = saved[:n] if normalize else None
    if lean:
        ds, sums = saved[len(saved) - (2 if normalize else 1) * n:][:n], saved[len(saved) - n:]
        return [_finish(d, x, norm, s, g, scope, slice(0, 3))
                for d, x, norm, s, g in zip(ds, xs, norms or [None] * n, sums if normalize else [None] * n, grads)]
    ks = kernel_settings(taps, c1, c2, sqrt_eps, padding, components)
    _, dxs, dys, sums = kernels.ssim_gradient(xs, ys, ks, need_x, need_y,
                                              plane_values=norms or _plane_values(xs, ys, normalize),
                                              normalize=bool(normalize), upstream=grads, per_pixel=per_pixel)
    parts = kernels.NORM_PARTIALS
    result = []
    for which, ds, inputs, columns in ((0, dxs, xs, slice(0, 3)), (1, dys, ys, slice(3, 6))):
        first = parts * (which and need_x)
        for lvl, d in enumerate(ds):
            result.append(_finish(d, inputs[lvl], norms[lvl] if norms else None,
                                  sums[lvl][..., first:first + parts] if norms else None, None, scope, columns))
    return result


@_ssim_levels_backward.register_fake
def _(xs, ys, grads, saved, taps, c1, c2, sqrt_eps, padding, components, per_pixel, normalize, lean,
      need_x, need_y):
    return [torch.empty_like(x, memory_format=torch.contiguous_format)
            for x in (xs if need_x else []) + (ys if need_y else [])]


def _setup_context(ctx, inputs, output) -> None:
    xs, ys, *args = inputs
    n = len(xs)
    ctx.mark_non_differentiable(*output[n:])
    ctx.set_materialize_grads(False)  # no zero gradients for the saved extras (input-sized D)
    ctx.save_for_backward(*xs, *ys, *output[n:])
    ctx.num_levels = n
    ctx.args = args  # taps, c1, c2, sqrt_eps, padding, components, per_pixel, normalize, lean
    ctx.need_x = any(x.requires_grad for x in xs)
    ctx.need_y = any(y.requires_grad for y in ys)
    ctx.out_shapes = [out.shape for out in output[:n]]


def _backward(ctx, *grads):
    grads = grads[0] if len(grads) == 1 and isinstance(grads[0], (list, tuple)) else grads
    if torch.is_grad_enabled():
        raise RuntimeError("backend='triton' computes first derivatives only (no double backward); "
                           "use backend='torch' for higher-order gradients")
    saved, n = ctx.saved_tensors, ctx.num_levels
    xs, ys, extra = list(saved[:n]), list(saved[n:2 * n]), list(saved[2 * n:])
    # Unused outputs get no gradient; the kernels want dense float32 ones.
    grads = [torch.zeros(shape, device=xs[0].device) if g is None else g.float().contiguous()
             for shape, g in zip(ctx.out_shapes, grads[:n])]
    result = torch.ops.fastssim.ssim_levels_backward(xs, ys, grads, extra, *ctx.args,
                                                     ctx.need_x, ctx.need_y)
    dxs = result[:n] if ctx.need_x else [None] * n
    dys = result[n * ctx.need_x:] if ctx.need_y else [None] * n
    return (dxs, dys) + (None,) * len(ctx.args)


torch.library.register_autograd("fastssim::ssim_levels", _backward, setup_context=_setup_context)
