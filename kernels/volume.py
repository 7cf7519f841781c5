"""Row-streaming Gaussian-windowed SSIM kernels over ``(N, C, D, H, W)`` volumes.

Design (the 2-D kernels' row streaming, one axis deeper; docs/design.md has the gradient):
- A program owns one depth slice of one (sample, channel) volume, a strip of ``BLOCK_W``
  columns (one per thread) and a run of rows, and walks down the rows. Each step forms, for
  one padded row, the "horizontal" window sums of x, y, x^2, y^2, xy over the (depth, width)
  plane of the window: one load per depth tap and width tap, weighted ``g(dd) g(t)``, with
  the padding applied by index mapping at load time (reflect mirrors, zeros masks, valid
  offsets). The last 2r+1 such rows are loop-carried values, so the height pass is 2r+1
  FMAs per moment. No shared memory, no band products, no atomics.
- Only taps inside the window ever multiply a value, so a non-finite voxel reaches exactly
  the outputs whose window holds it, as in the float64 reference.
- Exact statistics at any offset: each volume is shifted by the constant the op passes
  (``fastssim.reference.plane_shifts``: a median of a small grid of voxels, robust to
  outliers) before the moments; variances and covariance are shift-invariant and the
  shift is added back to the means.
- Backward is two streams. ``volume_stream_kernel`` with ``COEF`` writes, per output voxel,
  the coefficients ``(c, a_x, b_x[, a_y, b_y])`` of docs/design.md times the upstream
  gradient (float32 volumes of the output size). ``volume_grad_kernel`` streams over pixel
  rows and applies the transposed filter to them, the same structure with the padding's
  adjoint folded into the weights per axis (reflect: the weights of a voxel's mirror images
  are added; zeros: crop; valid: the full, zero-extended convolution), and finishes
  ``dx = G^T a_x + 2 x G^T b_x + y G^T c`` (x and y shifted as in the forward).
- Reductions are deterministic: each program writes its partial sum to its own slot; the
  caller sums the slots in a fixed order.
Statistics accumulate in float32 whatever the input dtype; offsets are 64-bit.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .ssim import (PAD_REFLECT, PAD_VALID, KernelSettings, _device_guard, _source_index, _ssim_and_partials,
                   _tap_tuple, _window_sums)

# Warps per 32 columns of a strip: one column per thread.
_THREADS_PER_WARP = 32


@triton.jit
def _program_volumes(pid, slices, runs, strips, channels, x_ptr, sxn, sxc, y_ptr, syn, syc, shift_ptr):
    """Plane, depth slice, row run and column strip of program ``pid``, its x and y volumes
    and their shifts.

    Programs are ordered by (sample, channel) plane, then slice, run and strip, so the
    programs of a plane are contiguous (the caller reduces their partial sums per plane).
    """
    strip = pid % strips
    rest = pid // strips
    run = rest % runs
    rest = rest // runs
    depth_slice = rest % slices
    plane = rest // slices
    x_vol = x_ptr + (plane // channels) * sxn + (plane % channels) * sxc
    y_vol = y_ptr + (plane // channels) * syn + (plane % channels) * syc
    # The constants subtracted from the volumes before their moments (x's, then y's).
    return (plane, depth_slice, run, strip, x_vol, y_vol, tl.load(shift_ptr + 2 * plane),
            tl.load(shift_ptr + 2 * plane + 1))


@triton.jit
def _window_sources(centre, size, RADIUS: tl.constexpr, PADDING: tl.constexpr):
    """Source indices of the 2r+1 taps around padded coordinate(s) ``centre`` along an axis of
    ``size``, and whether each is inside (zeros padding reads 0 outside)."""
    sources = ()
    inside = ()
    for t in tl.static_range(2 * RADIUS + 1):
        src = _source_index(centre + (t - RADIUS), size, PADDING)
        sources = sources + (src,)
        inside = inside + ((src >= 0) & (src < size),)
    return sources, inside


@triton.jit
def _taps(taps_ptr, d, RADIUS: tl.constexpr):
    """Gaussian weight g(d), zero outside the window."""
    inside = (d >= -RADIUS) & (d <= RADIUS)
    return tl.load(taps_ptr + d + RADIUS, mask=inside, other=0.0)


@triton.jit
def _mirror_weight(taps_ptr, i, o, size, RADIUS: tl.constexpr):
    """Weight of output ``o`` on voxel(s) ``i`` of a reflect-padded axis of ``size`` through the
    mirror images ``-i`` and ``2(size-1) - i`` of ``i``; they land on outputs within ``r`` of
    ``i``, which also read ``i`` itself. Adding it is the adjoint of reflect padding."""
    top = tl.where(i >= 1, _taps(taps_ptr, -i - o, RADIUS), 0.0)
    bottom = tl.where(i <= size - 2, _taps(taps_ptr, 2 * (size - 1) - i - o, RADIUS), 0.0)
    return top + bottom


@triton.jit
def _adjoint_weights(taps, taps_ptr, i, size, RADIUS: tl.constexpr, PADDING: tl.constexpr):
    """Weights of outputs ``i - OFF - r + s`` (s = 0 .. 2r) on voxel(s) ``i`` of an axis of
    ``size``: the taps, plus the mirror images' weights for reflect padding (OFF = 0)."""
    if PADDING == PAD_REFLECT:
        weights = ()
        for s in tl.static_range(2 * RADIUS + 1):
            weights = weights + (taps[s] + _mirror_weight(taps_ptr, i, i - RADIUS + s, size, RADIUS),)
    else:
        weights = taps
    return weights


@triton.jit
def _row_moments(x_vol, sxd, x_row, sxw, y_vol, syd, y_row, syw, row_ok, depth_centre, depth,
                 col_src, col_ok, taps, taps_ptr, shift_x, shift_y,
                 RADIUS: tl.constexpr, PADDING: tl.constexpr):
    """Window sums of x, y, x^2, y^2, xy over the (depth, width) plane of one padded row.

    ``x_row`` is the offset of the row's source within a depth slice, ``depth_centre`` the
    padded depth of the window's centre, ``col_src``/``col_ok`` the width taps' source
    columns. Loaded values are shifted; padding reads ``0 - shift``.
    """
    h_x = tl.zeros(col_src[0].shape, dtype=tl.float32)
    h_y = tl.zeros(col_src[0].shape, dtype=tl.float32)
    h_xx = tl.zeros(col_src[0].shape, dtype=tl.float32)
    h_yy = tl.zeros(col_src[0].shape, dtype=tl.float32)
    h_xy = tl.zeros(col_src[0].shape, dtype=tl.float32)
    # Depth taps in a loop: unrolling them too keeps (2r+1)^2 addresses live and spills.
    for e in range(2 * RADIUS + 1):
        src_d = _source_index(depth_centre + e - RADIUS, depth, PADDING)
        ok = row_ok & (src_d >= 0) & (src_d < depth)
        x_slice = x_vol + src_d * sxd + x_row
        y_slice = y_vol + src_d * syd + y_row
        w_x = tl.zeros(col_src[0].shape, dtype=tl.float32)
        w_y = tl.zeros(col_src[0].shape, dtype=tl.float32)
        w_xx = tl.zeros(col_src[0].shape, dtype=tl.float32)
        w_yy = tl.zeros(col_src[0].shape, dtype=tl.float32)
        w_xy = tl.zeros(col_src[0].shape, dtype=tl.float32)
        for t in tl.static_range(2 * RADIUS + 1):
            mask = ok & col_ok[t]
            x = tl.load(x_slice + col_src[t] * sxw, mask=mask, other=0.0).to(tl.float32) - shift_x
            y = tl.load(y_slice + col_src[t] * syw, mask=mask, other=0.0).to(tl.float32) - shift_y
            gx = taps[t] * x
            gy = taps[t] * y
            w_x += gx
            w_y += gy
            w_xx += gx * x
            w_yy += gy * y
            w_xy += gx * y
        g = tl.load(taps_ptr + e)
        h_x += g * w_x
        h_y += g * w_y
        h_xx += g * w_xx
        h_yy += g * w_yy
        h_xy += g * w_xy
    return h_x, h_y, h_xx, h_yy, h_xy


@triton.jit
def volume_stream_kernel(x_ptr, sxn, sxc, sxd, sxh, sxw, y_ptr, syn, syc, syd, syh, syw, shift_ptr,
                         channels, depth, height, width, out_d, out_h, out_w,
                         runs, strips, rows_per_program, taps_ptr, partial_ptr, map_ptr,
                         upstream_ptr, coef_ptr, kind_stride, c1, c2, sqrt_eps,
                         RADIUS: tl.constexpr, BLOCK_W: tl.constexpr, PADDING: tl.constexpr,
                         USE_L: tl.constexpr, USE_C: tl.constexpr, USE_S: tl.constexpr,
                         STORE_MAP: tl.constexpr, COEF: tl.constexpr,
                         UPSTREAM_PIXEL: tl.constexpr, NEED_X: tl.constexpr, NEED_Y: tl.constexpr):
    """SSIM over one output depth slice, ``rows_per_program`` output rows and ``BLOCK_W``
    output columns of one volume.

    Without ``COEF``: the sum into ``partial_ptr[pid]`` and, with ``STORE_MAP``, the map
    (contiguous float32 ``(N, C, D', H', W')``). With ``COEF``: with g the upstream gradient
    of the voxel (``UPSTREAM_PIXEL``: a map-shaped float32 volume; else one float32 per plane
    on the plane's mean, divided by the voxel count), the coefficient volumes ``c = g dS/dcov``
    and, per input needing a gradient, ``a_x = g (dS/dmu_x - 2 mu_x dS/dvar_x - mu_y dS/dcov)``,
    ``b_x = g dS/dvar_x`` (likewise for y), in this order, ``kind_stride`` elements apart
    (means shifted as the loads).
    """
    pid = tl.program_id(0).to(tl.int64)
    plane, d, run, strip, x_vol, y_vol, shift_x, shift_y = _program_volumes(
        pid, out_d, runs, strips, channels, x_ptr, sxn, sxc, y_ptr, syn, syc, shift_ptr)
    taps = _tap_tuple(taps_ptr, RADIUS)
    # Output voxel o is centred on padded coordinate o + OFF along every axis.
    if PADDING == PAD_VALID:
        OFF: tl.constexpr = RADIUS
    else:
        OFF: tl.constexpr = 0
    out_col = strip * BLOCK_W + tl.arange(0, BLOCK_W)
    out_col_ok = out_col < out_w
    col_src, col_ok = _window_sources(out_col + OFF, width, RADIUS, PADDING)
    first_row = run * rows_per_program
    end_row = tl.minimum(first_row + rows_per_program, out_h)
    plane_size = out_d * out_h * out_w
    slice_offset = plane * plane_size + d * out_h * out_w

    zero_row = tl.zeros((BLOCK_W,), dtype=tl.float32)
    ring = ()
    for s in tl.static_range(2 * RADIUS + 1):
        ring = ring + (zero_row,)
    moments = (ring, ring, ring, ring, ring)
    ssim_sum = zero_row
    if COEF:
        if UPSTREAM_PIXEL:
            upstream = upstream_ptr + slice_offset
        else:
            plane_grad = tl.load(upstream_ptr + plane) / plane_size.to(tl.float32)

    for k in range(end_row - first_row + 2 * RADIUS):
        src_r = _source_index(first_row + OFF - RADIUS + k, height, PADDING)
        fresh = _row_moments(x_vol, sxd, src_r * sxh, sxw, y_vol, syd, src_r * syh, syw,
                             (src_r >= 0) & (src_r < height), d + OFF, depth, col_src, col_ok,
                             taps, taps_ptr, shift_x, shift_y, RADIUS, PADDING)
        moments = (moments[0][1:] + (fresh[0],), moments[1][1:] + (fresh[1],),
                   moments[2][1:] + (fresh[2],), moments[3][1:] + (fresh[3],),
                   moments[4][1:] + (fresh[4],))
        # The output row completed by this step; earlier steps only fill the ring.
        q = first_row - 2 * RADIUS + k
        out_ok = out_col_ok & (k >= 2 * RADIUS)
        m_x, m_y, e_xx, e_yy, e_xy = _window_sums(moments, taps, RADIUS)
        var_x = e_xx - m_x * m_x
        var_y = e_yy - m_y * m_y
        cov = e_xy - m_x * m_y
        ssim, d_mx, d_my, d_vx, d_vy, d_cov = _ssim_and_partials(
            m_x + shift_x, m_y + shift_y, var_x, var_y, cov, c1, c2, sqrt_eps, USE_L, USE_C, USE_S)
        offs = slice_offset + q * out_w + out_col
        if COEF:
            if UPSTREAM_PIXEL:
                g = tl.load(upstream + q * out_w + out_col, mask=out_ok, other=0.0)
            else:
                g = plane_grad
            tl.store(coef_ptr + offs, g * d_cov, mask=out_ok)
            if NEED_X:
                tl.store(coef_ptr + kind_stride + offs, g * (d_mx - 2 * m_x * d_vx - m_y * d_cov), mask=out_ok)
                tl.store(coef_ptr + 2 * kind_stride + offs, g * d_vx, mask=out_ok)
            if NEED_Y:
                FIRST_Y: tl.constexpr = 1 + 2 * NEED_X
                tl.store(coef_ptr + FIRST_Y * kind_stride + offs,
                         g * (d_my - 2 * m_y * d_vy - m_x * d_cov), mask=out_ok)
                tl.store(coef_ptr + (FIRST_Y + 1) * kind_stride + offs, g * d_vy, mask=out_ok)
        else:
            ssim_sum += tl.where(out_ok, ssim, 0.0)
            if STORE_MAP:
                tl.store(map_ptr + offs, ssim, mask=out_ok)
    if not COEF:
        tl.store(partial_ptr + pid, tl.sum(ssim_sum, axis=0))


@triton.jit
def _transposed_row(coef_row, kind_stride, row_ok, i_d, out_d, out_h, out_w, depth, o_w, col_ok,
                    col_weights, taps_ptr, KINDS: tl.constexpr, RADIUS: tl.constexpr,
                    PADDING: tl.constexpr, OFF: tl.constexpr):
    """Transposed filter over the (depth, width) plane of one coefficient row, per kind.

    ``coef_row`` points at the row in output slice 0 of kind 0. Voxel (``i_d``, ., column)
    collects the outputs at depth ``i_d - OFF - r + e`` and columns ``o_w[t]``, weighted by
    the depth and ``col_weights[t]`` adjoint weights. Outputs off the grid read zero: the
    full, zero-extended convolution.
    """
    acc = ()
    for kind in tl.static_range(KINDS):
        acc = acc + (tl.zeros(o_w[0].shape, dtype=tl.float32),)
    # Depth in a loop: unrolling it too keeps (2r+1)^2 addresses live and spills.
    for e in range(2 * RADIUS + 1):
        o_d = i_d - OFF - RADIUS + e
        w_d = tl.load(taps_ptr + e)
        if PADDING == PAD_REFLECT:
            w_d += _mirror_weight(taps_ptr, i_d, o_d, depth, RADIUS)
        ok = row_ok & (o_d >= 0) & (o_d < out_d)
        ptr = coef_row + o_d * out_h * out_w
        summed = ()
        for kind in tl.static_range(KINDS):
            part = tl.zeros(o_w[0].shape, dtype=tl.float32)
            for t in tl.static_range(2 * RADIUS + 1):
                part += col_weights[t] * tl.load(ptr + kind * kind_stride + o_w[t],
                                                 mask=ok & col_ok[t], other=0.0)
            summed = summed + (acc[kind] + w_d * part,)
        acc = summed
    return acc


@triton.jit
def volume_grad_kernel(x_ptr, sxn, sxc, sxd, sxh, sxw, y_ptr, syn, syc, syd, syh, syw, shift_ptr,
                       channels, depth, height, width, out_d, out_h, out_w,
                       runs, strips, rows_per_program, taps_ptr, coef_ptr, kind_stride,
                       dx_ptr, dy_ptr, RADIUS: tl.constexpr, BLOCK_W: tl.constexpr,
                       PADDING: tl.constexpr, NEED_X: tl.constexpr, NEED_Y: tl.constexpr):
    """``dx = G^T a_x + 2 x G^T b_x + y G^T c`` (and ``dy``) over one depth slice,
    ``rows_per_program`` rows and ``BLOCK_W`` columns of one volume.

    ``G^T`` includes the adjoint of the padding, so the result is the gradient w.r.t. the
    unpadded input; gradients are written contiguous ``(N, C, D, H, W)`` in their pointers'
    dtype. The coefficient volumes are those of ``volume_stream_kernel`` with ``COEF``.
    """
    pid = tl.program_id(0).to(tl.int64)
    plane, i_d, run, strip, x_vol, y_vol, shift_x, shift_y = _program_volumes(
        pid, depth, runs, strips, channels, x_ptr, sxn, sxc, y_ptr, syn, syc, shift_ptr)
    taps = _tap_tuple(taps_ptr, RADIUS)
    # Voxel i is read by the outputs o = i - OFF - r + s (s = 0 .. 2r) along each axis.
    if PADDING == PAD_VALID:
        OFF: tl.constexpr = RADIUS
    else:
        OFF: tl.constexpr = 0
    KINDS: tl.constexpr = 1 + 2 * NEED_X + 2 * NEED_Y
    cols = strip * BLOCK_W + tl.arange(0, BLOCK_W)
    cols_ok = cols < width
    col_weights = _adjoint_weights(taps, taps_ptr, cols, width, RADIUS, PADDING)
    o_w = ()
    col_ok = ()
    for s in tl.static_range(2 * RADIUS + 1):
        o = cols - OFF - RADIUS + s
        o_w = o_w + (o,)
        col_ok = col_ok + ((o >= 0) & (o < out_w),)
    first_row = run * rows_per_program
    end_row = tl.minimum(first_row + rows_per_program, height)
    coef_vol = coef_ptr + plane * out_d * out_h * out_w
    grad_slice = (plane * depth + i_d) * height * width

    zero_row = tl.zeros((BLOCK_W,), dtype=tl.float32)
    ring = ()
    for s in tl.static_range(2 * RADIUS + 1):
        ring = ring + (zero_row,)
    rings = ()
    for kind in tl.static_range(KINDS):
        rings = rings + (ring,)

    for k in range(end_row - first_row + 2 * RADIUS):
        v = first_row - OFF - RADIUS + k
        fresh = _transposed_row(coef_vol + v * out_w, kind_stride, (v >= 0) & (v < out_h), i_d,
                                out_d, out_h, out_w, depth, o_w, col_ok, col_weights, taps_ptr,
                                KINDS, RADIUS, PADDING, OFF)
        rotated = ()
        for kind in tl.static_range(KINDS):
            rotated = rotated + (rings[kind][1:] + (fresh[kind],),)
        rings = rotated
        # The voxel row completed by this step: slot s holds coefficient row i - OFF - r + s.
        i = first_row - 2 * RADIUS + k
        sums = _window_sums(rings, _adjoint_weights(taps, taps_ptr, i, height, RADIUS, PADDING), RADIUS)
        ok = cols_ok & (k >= 2 * RADIUS)
        x = tl.load(x_vol + i_d * sxd + i * sxh + cols * sxw, mask=ok, other=0.0).to(tl.float32) - shift_x
        y = tl.load(y_vol + i_d * syd + i * syh + cols * syw, mask=ok, other=0.0).to(tl.float32) - shift_y
        offs = grad_slice + i * width + cols
        if NEED_X:
            d_x = sums[1] + 2 * x * sums[2] + y * sums[0]
            tl.store(dx_ptr + offs, d_x.to(dx_ptr.dtype.element_ty), mask=ok)
        if NEED_Y:
            FIRST_Y: tl.constexpr = 1 + 2 * NEED_X
            d_y = sums[FIRST_Y] + 2 * y * sums[FIRST_Y + 1] + x * sums[0]
            tl.store(dy_ptr + offs, d_y.to(dy_ptr.dtype.element_ty), mask=ok)


# ----------------------------------------------------------------------------- launchers


def _strip_width(columns: int) -> int:
    """Columns per program, one per thread: the power of two covering ``columns``, 32 to 128."""
    return min(128, max(_THREADS_PER_WARP, triton.next_power_of_2(columns)))


def _rows_per_program(radius: int) -> int:
    """Rows a program walks: each run re-reads 2r halo rows, so at least 8r keeps that
    overhead at a quarter or less."""
    return max(32, 8 * radius)


def _stream_grid(planes: int, slices: int, rows: int, columns: int, radius: int) -> dict:
    """Launch geometry: programs over (plane, depth slice, row run, column strip)."""
    block_w = _strip_width(columns)
    rows_per_program = _rows_per_program(radius)
    runs = triton.cdiv(rows, rows_per_program)
    strips = triton.cdiv(columns, block_w)
    return dict(programs=planes * slices * runs * strips, runs=runs, strips=strips,
                rows_per_program=rows_per_program, block_w=block_w)


def _input_args(x: torch.Tensor, y: torch.Tensor, shifts: torch.Tensor) -> tuple:
    return (x, *x.stride(), y, *y.stride(), shifts, x.shape[1], *x.shape[2:])


def _settings_args(settings: KernelSettings) -> dict:
    return dict(c1=settings.c1, c2=settings.c2, sqrt_eps=settings.sqrt_eps, RADIUS=settings.radius,
                PADDING=settings.padding, USE_L=settings.use_l, USE_C=settings.use_c, USE_S=settings.use_s)


def ssim3d_forward(x: torch.Tensor, y: torch.Tensor, shifts: torch.Tensor, settings: KernelSettings,
                   per_pixel: bool) -> torch.Tensor:
    """SSIM of two ``(N, C, D, H, W)`` volumes (float32/16, bfloat16, any strides).

    Args:
        x, y: the inputs, same shape, dtype and device.
        shifts: float32 ``(N, C, 2)`` contiguous: the constants subtracted from each x and y
            volume before the moments (exact statistics at any offset).
        settings: the SSIM settings in the kernels' terms (taps on the inputs' device).

    Returns:
        The float32 SSIM map ``(N, C, D', H', W')`` when ``per_pixel``, else the per-channel
        mean ``(N, C)``, reduced from per-program partial sums in a fixed order.
    """
    out_size = settings.output_size(*x.shape[2:])
    planes = x.shape[0] * x.shape[1]
    grid = _stream_grid(planes, *out_size, settings.radius)
    partials = torch.empty(grid["programs"], device=x.device, dtype=torch.float32)
    ssim_map = (torch.empty(x.shape[:2] + tuple(out_size), device=x.device, dtype=torch.float32)
                if per_pixel else partials)
    with _device_guard(x.device):
        volume_stream_kernel[(grid["programs"],)](
            *_input_args(x, y, shifts), *out_size, grid["runs"], grid["strips"], grid["rows_per_program"],
            settings.taps, partials, ssim_map, partials, partials, 0, BLOCK_W=grid["block_w"],
            STORE_MAP=per_pixel, COEF=False, UPSTREAM_PIXEL=False, NEED_X=False, NEED_Y=False,
            num_warps=grid["block_w"] // _THREADS_PER_WARP, **_settings_args(settings))
    if per_pixel:
        return ssim_map
    return partials.view(*x.shape[:2], -1).sum(dim=-1) / (out_size[0] * out_size[1] * out_size[2])


def ssim3d_backward(x: torch.Tensor, y: torch.Tensor, shifts: torch.Tensor, upstream: torch.Tensor,
                    settings: KernelSettings,
                    per_pixel: bool, need_x: bool,
                    need_y: bool) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Gradients of ``sum(upstream * ssim)`` w.r.t. the volumes that need them.

    ``upstream`` is float32 and contiguous: the map's gradient ``(N, C, D', H', W')`` when
    ``per_pixel``, else the gradient of the per-channel mean ``(N, C)``. Returns ``(dx, dy)``,
    ``None`` where not needed, contiguous in the input dtype. Needs a float32 scratch of
    ``1 + 2 * (need_x + need_y)`` volumes of the output size.
    """
    out_size = settings.output_size(*x.shape[2:])
    radius = settings.radius
    planes = x.shape[0] * x.shape[1]
    kinds = 1 + 2 * need_x + 2 * need_y
    kind_stride = planes * out_size[0] * out_size[1] * out_size[2]
    coef = torch.empty(kinds * kind_stride, device=x.device, dtype=torch.float32)
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype) if need_x else None
    dy = torch.empty(y.shape, device=y.device, dtype=y.dtype) if need_y else None
    out_grid = _stream_grid(planes, out_size[0], out_size[1], out_size[2], radius)
    in_grid = _stream_grid(planes, x.shape[2], x.shape[3], x.shape[4], radius)
    common = dict(RADIUS=radius, PADDING=settings.padding, NEED_X=need_x, NEED_Y=need_y)
    with _device_guard(x.device):
        volume_stream_kernel[(out_grid["programs"],)](
            *_input_args(x, y, shifts), *out_size, out_grid["runs"], out_grid["strips"],
            out_grid["rows_per_program"], settings.taps, coef, coef, upstream, coef, kind_stride,
            BLOCK_W=out_grid["block_w"], STORE_MAP=False, COEF=True, UPSTREAM_PIXEL=per_pixel,
            num_warps=out_grid["block_w"] // _THREADS_PER_WARP, NEED_X=need_x, NEED_Y=need_y,
            **_settings_args(settings))
        volume_grad_kernel[(in_grid["programs"],)](
            *_input_args(x, y, shifts), *out_size, in_grid["runs"], in_grid["strips"],
            in_grid["rows_per_program"], settings.taps, coef, kind_stride,
            coef if dx is None else dx, coef if dy is None else dy,
            BLOCK_W=in_grid["block_w"], num_warps=in_grid["block_w"] // _THREADS_PER_WARP, **common)
    return dx, dy
