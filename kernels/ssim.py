"""Row-streaming Gaussian-windowed SSIM kernels over a packed list of NCHW maps.

Design (benchmarks/NOTES.md has the measurements, docs/design.md the gradient):
- One launch covers every level of a call (e.g. all FPN levels): per level, the data
  addresses, strides, sizes and the first tile id of the level are kernel arguments
  (a tuple of int tuples, ``_level_args``); for each tile, a program finds its level
  with static compares, its (sample, channel) plane and its rows and columns. Nothing
  is copied to the device or read back per call, so launches can be captured in CUDA
  graphs.
- A persistent grid for the lean training step (``persistent``): at most a few programs
  per multiprocessor, each taking every P-th tile, so the per-program scratch below is a
  fixed workspace, not a share of the input. Other launches run one program per tile.
- Row streaming, no shared memory and no band products: a tile is a strip of ``BLOCK_W``
  columns (one per thread) by a run of rows, and its program walks down the rows. Each
  step stages one padded input row (its ``BLOCK_W + 2r`` columns loaded, padded,
  normalised and shifted once) in a small per-program scratch (L1/L2 resident, two
  buffers used on alternate steps: one barrier per step), reads it back at the 2r+1
  column shifts of the window (constant offsets: no per-tap addresses or masks held in
  registers), forms the five horizontal moment sums and keeps the last 2r+1 of them as
  loop-carried values, so the vertical pass is 2r+1 FMAs per moment. Only taps inside
  the window ever multiply a value: a NaN or Inf pixel reaches exactly the outputs whose
  window holds it, as in the float64 reference.
- Fused gradient in the same stream (``GRAD``): once a moment row is complete, its
  per-pixel coefficients ``(a, b, c)`` of docs/design.md (times the upstream gradient)
  are filtered horizontally by the transposed window through the same scratch, the last
  2r+1 filtered rows are kept as loop-carried values, and
  ``dx = G^T a + 2 x G^T b + y G^T c`` is finished 2r rows behind the moment front.
  Reflect padding's adjoint folds the mirror images of a pixel into it: columns by
  adding the filtered values of the mirror columns (held by lanes of the same strip,
  passed through the scratch on border strips only), rows through per-row tap weights
  near the borders.
- Min-max normalisation at load time: ``x' = (x - low) * scale`` with per-plane ``low`` and
  ``scale``; no normalised copy exists. The gradient kernel also sums, per tile, what
  the gradient through the min and the max needs (``sum D``, ``sum D (x - low)`` and the
  number of pixels equal to the min and to the max).
- Exact statistics for any offset: without normalisation each plane is shifted by a value
  near its data (the op passes ``fastssim.reference.plane_shifts``: a median of a small
  grid of pixels, robust to outliers) before the moments are formed; variances and
  covariance are shift-invariant and the shift is added back to the means.
  With normalisation the values already lie in [0, 1] and are not shifted.
- Reductions are deterministic: each tile's partial sums go to the tile's own slot; the
  caller sums the slots in a fixed order. No atomics.
Statistics accumulate in float32 whatever the input dtype.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

# Padding modes (constexpr switches).
PAD_VALID = tl.constexpr(0)
PAD_REFLECT = tl.constexpr(1)
PAD_ZEROS = tl.constexpr(2)

# Where the gradient kernel's upstream gradient comes from.
UPSTREAM_MEAN = tl.constexpr(0)   # weight 1 on each plane's mean (the lean forward)
UPSTREAM_PLANE = tl.constexpr(1)  # one float32 per plane, on the plane's mean
UPSTREAM_PIXEL = tl.constexpr(2)  # one float32 per output pixel

# Fields of each level's tuple of kernel arguments built by ``_level_args``.
F_X = tl.constexpr(0)
F_Y = tl.constexpr(1)
F_SXN = tl.constexpr(2)
F_SXC = tl.constexpr(3)
F_SXH = tl.constexpr(4)
F_SXW = tl.constexpr(5)
F_SYN = tl.constexpr(6)
F_SYC = tl.constexpr(7)
F_SYH = tl.constexpr(8)
F_SYW = tl.constexpr(9)
F_C = tl.constexpr(10)
F_H = tl.constexpr(11)
F_W = tl.constexpr(12)
F_HO = tl.constexpr(13)
F_WO = tl.constexpr(14)
F_STRIPS = tl.constexpr(15)
F_TILES = tl.constexpr(16)
F_START = tl.constexpr(17)
F_MAP = tl.constexpr(18)
F_UPSTREAM = tl.constexpr(19)
F_DX = tl.constexpr(20)
F_DY = tl.constexpr(21)
F_NORM = tl.constexpr(22)
# Multiplier and shift that divide by the channels, the strips and the tiles (``_magic_divisor``).
F_C_MAGIC = tl.constexpr(23)
F_C_SHIFT = tl.constexpr(24)
F_STRIPS_MAGIC = tl.constexpr(25)
F_STRIPS_SHIFT = tl.constexpr(26)
F_TILES_MAGIC = tl.constexpr(27)
F_TILES_SHIFT = tl.constexpr(28)
NUM_FIELDS = 29

# Triton specialises every integer inside a tuple argument on its value (1 becomes a
# constant, multiples of 16 get an alignment hint, int32 or int64 by magnitude), and
# ``do_not_specialize`` does not reach into tuples: each new combination of sizes would
# compile the kernel again. The level fields therefore travel as ``16 v + _OPAQUE_BIAS``
# (``_opaque``): always int64, never 1, never a multiple of 16, one variant for all sizes.
_OPAQUE_BIAS = 2 ** 40 + 8
_BIAS = tl.constexpr(_OPAQUE_BIAS)

# Per-plane normalisation values (float32, ``NORM_FIELDS`` per plane).
N_LOW_X = tl.constexpr(0)
N_SCALE_X = tl.constexpr(1)
N_HIGH_X = tl.constexpr(2)
N_LOW_Y = tl.constexpr(3)
N_SCALE_Y = tl.constexpr(4)
N_HIGH_Y = tl.constexpr(5)
NORM_FIELDS = 6
_NORM_FIELDS = tl.constexpr(NORM_FIELDS)

# Per-tile partial sums of the gradient kernel, per input needing a gradient:
# sum D, sum D (x - low), count(x == low), count(x == high). Slot 0 is the SSIM sum.
NORM_PARTIALS = 4
_NORM_PARTIALS = tl.constexpr(NORM_PARTIALS)


@triton.jit
def _decode(value):
    """The int64 value of a level field passed as ``_opaque(value)``."""
    return (value - _BIAS) >> 4


@triton.jit
def _field(levels, level, FIELD: tl.constexpr):
    """Field ``FIELD`` of level ``level`` (int64): static compares over the levels' arguments."""
    value = levels[0][FIELD]
    for lvl in tl.static_range(1, len(levels)):
        value = tl.where(level == lvl, levels[lvl][FIELD], value)
    return _decode(value)


@triton.jit
def _address(levels, level, FIELD: tl.constexpr, DTYPE: tl.constexpr):
    """Address field ``FIELD`` of level ``level`` as a pointer to ``DTYPE``."""
    return _field(levels, level, FIELD).to(tl.pointer_type(DTYPE))


@triton.jit
def _store_to_level(levels, level, FIELD: tl.constexpr, offsets, values, mask, DTYPE: tl.constexpr):
    """Store ``values`` at ``offsets`` from the address field ``FIELD`` of level ``level``.

    One branch per level, each reading its own kernel argument: a selected address would
    stay live in registers through the row loop.
    """
    for lvl in tl.static_range(len(levels)):
        if level == lvl:
            tl.store(_address(levels, lvl, FIELD, DTYPE) + offsets, values, mask=mask)


@triton.jit
def _divmod(value, levels, level, DIVISOR: tl.constexpr, MAGIC: tl.constexpr, SHIFT: tl.constexpr):
    """``value // d`` and ``value % d`` for ``0 <= value < 2^31`` and the level's field
    ``DIVISOR`` d, by a multiply and a shift (``_magic_divisor``).

    No integer division: an int64 one is a call to ptxas's division subroutine, around which
    ptxas kept a live pointer in a stack frame (the dx+dy path at window 3, 8 B); 32-bit ones
    (a float reciprocal sequence) moved the program's scalars off ptxas's uniform datapath,
    and the dx+dy path at window 15 spilled 16-56 B (benchmarks/NOTES.md, "Reading").
    """
    quotient = (value * _field(levels, level, MAGIC)) >> _field(levels, level, SHIFT)
    return quotient, value - quotient * _field(levels, level, DIVISOR)


@triton.jit
def _locate(levels, tile):
    """Level, plane, sample, channel, row run and column strip of tile ``tile``.

    Tiles of a level are ordered by (sample, channel) plane, then run, then strip.
    """
    level = 0
    for lvl in tl.static_range(1, len(levels)):
        level = tl.where(tile >= _decode(levels[lvl][F_START]), lvl, level)
    # Tile ids are below 2^31 (``_launch_stream`` checks), so every dividend is.
    local = tile - _field(levels, level, F_START)
    plane, tile_in_plane = _divmod(local, levels, level, F_TILES, F_TILES_MAGIC, F_TILES_SHIFT)
    n, c = _divmod(plane, levels, level, F_C, F_C_MAGIC, F_C_SHIFT)
    run, strip = _divmod(tile_in_plane, levels, level, F_STRIPS, F_STRIPS_MAGIC, F_STRIPS_SHIFT)
    return level, plane, n, c, run, strip


@triton.jit
def _plane_ptr(levels, level, PTR: tl.constexpr, N_STRIDE: tl.constexpr, C_STRIDE: tl.constexpr,
               n, c, DTYPE: tl.constexpr):
    """Pointer to plane (n, c) of the level's x or y."""
    return (_address(levels, level, PTR, DTYPE) + n * _field(levels, level, N_STRIDE)
            + c * _field(levels, level, C_STRIDE))


@triton.jit
def _source_index(u, size, PADDING: tl.constexpr):
    """Map padded coordinates to source coordinates; the caller masks ``0 <= . < size``."""
    if PADDING == PAD_REFLECT:
        u = tl.where(u < 0, -u, u)
        u = tl.where(u > size - 1, 2 * (size - 1) - u, u)
    return u


@triton.jit
def _plane_shift(plane_values, FIELD: tl.constexpr, NORMALIZE: tl.constexpr):
    """Constant subtracted from a plane before its moments (from the op's per-plane values).

    Normalised values lie in [0, 1] and need none. Otherwise a value near the plane's data
    (the median of a small grid of its pixels, ``fastssim.reference.plane_shifts``) removes a
    common offset: E[x^2] - mu^2 in float32 cancels when |mu| >> sigma.
    """
    if NORMALIZE:
        return 0.0
    return tl.load(plane_values + FIELD)


@triton.jit
def _stage_row(stage, x_plane, y_plane, u, first_col, lanes, height, width, sxh, sxw, syh, syw,
               low_x, scale_x, shift_x, low_y, scale_y, shift_y, ROW_W: tl.constexpr,
               BLOCK_W: tl.constexpr, PADDING: tl.constexpr, NORMALIZE: tl.constexpr):
    """Write padded row ``u`` of x, then of y, columns ``first_col .. first_col + ROW_W - 1``,
    to ``stage`` as the moments use them.

    Each value is mapped (padding), loaded, normalised (padding reads 0 in the normalised
    domain) and shifted by the plane's constant once per step, so the 2r+1 taps of
    ``_row_moments`` read the stage at constant offsets with no per-tap index or mask to
    keep in registers. ``ROW_W - BLOCK_W`` (2r) columns go to the first lanes' second store.
    """
    src_r = _source_index(u, height, PADDING)
    row_ok = (src_r >= 0) & (src_r < height)
    x_row = x_plane + src_r * sxh
    y_row = y_plane + src_r * syh
    for part in tl.static_range(2):
        lane = lanes + part * BLOCK_W
        in_row = lane < ROW_W
        src_c = _source_index(first_col + lane, width, PADDING)
        mask = row_ok & in_row & (src_c >= 0) & (src_c < width)
        x = tl.load(x_row + src_c * sxw, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(y_row + src_c * syw, mask=mask, other=0.0).to(tl.float32)
        if NORMALIZE:
            x = tl.where(mask, (x - low_x) * scale_x, 0.0)
            y = tl.where(mask, (y - low_y) * scale_y, 0.0)
        tl.store(stage + lane, x - shift_x, mask=in_row)
        tl.store(stage + ROW_W + lane, y - shift_y, mask=in_row)


@triton.jit
def _row_moments(stage, lanes, taps, RADIUS: tl.constexpr, ROW_W: tl.constexpr):
    """Horizontal window sums of x, y, x^2, y^2, xy of the staged row (``_stage_row``):
    lane l's window is stage columns l .. l + 2r. The per-tap code is inline: nested jit
    calls are slow under the interpreter.
    """
    h_x = tl.zeros(lanes.shape, dtype=tl.float32)
    h_y = tl.zeros(lanes.shape, dtype=tl.float32)
    h_xx = tl.zeros(lanes.shape, dtype=tl.float32)
    h_yy = tl.zeros(lanes.shape, dtype=tl.float32)
    h_xy = tl.zeros(lanes.shape, dtype=tl.float32)
    for t in tl.static_range(2 * RADIUS + 1):
        x = tl.load(stage + lanes + t)
        y = tl.load(stage + ROW_W + lanes + t)
        gx = taps[t] * x
        gy = taps[t] * y
        h_x += gx
        h_y += gy
        h_xx += gx * x
        h_yy += gy * y
        h_xy += gx * y
    return h_x, h_y, h_xx, h_yy, h_xy


@triton.jit
def _tap_tuple(taps_ptr, RADIUS: tl.constexpr):
    """The 2r+1 Gaussian taps as scalars held in registers.

    The window is symmetric: taps r+1 .. 2r are the registers of taps r-1 .. 0, which
    frees r registers wherever the taps are live.
    """
    taps = ()
    for t in tl.static_range(RADIUS + 1):
        taps = taps + (tl.load(taps_ptr + t),)
    for t in tl.static_range(RADIUS + 1, 2 * RADIUS + 1):
        taps = taps + (taps[2 * RADIUS - t],)
    return taps


@triton.jit
def _window_sums(rings, weights, RADIUS: tl.constexpr):
    """Vertical pass: per ring, the sum of its 2r+1 carried rows times their weights.

    An explicit FMA chain: from separate products LLVM's SLP vectorizer packed the carried
    rows into vectors whose shuffles cost registers (window 13 spilled in every path).
    """
    sums = ()
    for kind in tl.static_range(len(rings)):
        acc = weights[0] * rings[kind][0]
        for slot in tl.static_range(1, 2 * RADIUS + 1):
            acc = tl.fma(weights[slot], rings[kind][slot], acc)
        sums = sums + (acc,)
    return sums


@triton.jit
def _ssim_and_partials(mu_x, mu_y, var_x, var_y, cov, c1, c2, sqrt_eps,
                       USE_L: tl.constexpr, USE_C: tl.constexpr, USE_S: tl.constexpr):
    """SSIM per pixel and its partial derivatives w.r.t. (mu_x, mu_y, var_x, var_y, cov).

    Same formulas as ``fastssim.reference.ssim_from_moments``; unused partials are
    removed by the compiler in the forward kernel.
    """
    zero = tl.zeros_like(mu_x)
    if USE_L:
        b1 = mu_x * mu_x + mu_y * mu_y + c1
        lum = (2 * mu_x * mu_y + c1) / b1
        dl_dmx = 2 * (mu_y - mu_x * lum) / b1
        dl_dmy = 2 * (mu_x - mu_y * lum) / b1
    else:
        lum = zero + 1.0
        dl_dmx = zero
        dl_dmy = zero
    if USE_C and USE_S:
        b2 = var_x + var_y + c2
        cs = (2 * cov + c2) / b2
        dcs_dvx = -cs / b2
        dcs_dvy = dcs_dvx
        dcs_dcov = 2 / b2
    elif USE_C or USE_S:
        sd_x = tl.sqrt(tl.maximum(var_x, 0.0) + sqrt_eps)
        sd_y = tl.sqrt(tl.maximum(var_y, 0.0) + sqrt_eps)
        # d sd / d var, with clamp_min's convention (gradient passes at var == 0).
        dsd_x = tl.where(var_x >= 0, 0.5 / sd_x, 0.0)
        dsd_y = tl.where(var_y >= 0, 0.5 / sd_y, 0.0)
        if USE_C:
            b2 = var_x + var_y + c2
            cs = (2 * sd_x * sd_y + c2) / b2
            dcs_dvx = (2 * sd_y * dsd_x - cs) / b2
            dcs_dvy = (2 * sd_x * dsd_y - cs) / b2
            dcs_dcov = zero
        else:
            den = sd_x * sd_y + c2 / 2
            cs = (cov + c2 / 2) / den
            dcs_dvx = -cs * sd_y * dsd_x / den
            dcs_dvy = -cs * sd_x * dsd_y / den
            dcs_dcov = 1 / den
    else:
        cs = zero + 1.0
        dcs_dvx = zero
        dcs_dvy = zero
        dcs_dcov = zero
    return lum * cs, cs * dl_dmx, cs * dl_dmy, lum * dcs_dvx, lum * dcs_dvy, lum * dcs_dcov


@triton.jit
def _transposed_columns(rows, lanes, taps, KINDS: tl.constexpr, RADIUS: tl.constexpr,
                        ROW_W: tl.constexpr):
    """Horizontal transposed filter of the ``KINDS`` coefficient rows at ``rows`` (``ROW_W``
    apart, output lane L at column r + L, r zero columns either side).

    Pixel lane l sits on output lane l's centre and collects ``g(d)`` times the coefficient
    ``d`` lanes away: row columns l .. l + 2r. Returns one filtered row per kind.
    """
    acc = ()
    for kind in tl.static_range(KINDS):
        acc = acc + (tl.zeros(lanes.shape, dtype=tl.float32),)
    for t in tl.static_range(2 * RADIUS + 1):
        summed = ()
        for kind in tl.static_range(KINDS):
            summed = summed + (acc[kind] + taps[t] * tl.load(rows + kind * ROW_W + lanes + t),)
        acc = summed
    return acc


@triton.jit
def _fold_reflected_columns(filtered, coef_rows, fold, lanes, pix_col, first_pix_col, width, taps,
                            KINDS: tl.constexpr, BLOCK_W: tl.constexpr, RADIUS: tl.constexpr,
                            COEF_W: tl.constexpr, FOLD_W: tl.constexpr):
    """Reflect padding's adjoint in columns: pixel ``p`` also receives the filtered value of
    its mirror images ``-p`` (p >= 1) and ``2(width-1) - p`` (p <= width-2).

    Lane L's filtered value is that of padded column ``first_pix_col - r + L``. The mirrors
    of owned pixels are padded columns within r of a border: on the left, lanes of the
    strip; on the right, up to r columns past the last lane when the strip after this one
    owns fewer than r + 1 columns, so the r last lanes also filter r columns further on
    (the coefficient rows' 2r zero columns on the right cover their windows). The filtered
    rows go through ``fold`` (``KINDS`` rows of ``BLOCK_W + r``) to reach other lanes.
    """
    further = _transposed_columns(coef_rows + RADIUS, lanes, taps, KINDS, RADIUS, COEF_W)
    for kind in tl.static_range(KINDS):
        tl.store(fold + kind * FOLD_W + lanes, filtered[kind])
        tl.store(fold + kind * FOLD_W + RADIUS + lanes, further[kind], mask=lanes >= BLOCK_W - RADIUS)
    tl.debug_barrier()
    first_lane_col = first_pix_col - RADIUS
    left = -pix_col - first_lane_col
    left_ok = (pix_col >= 1) & (left >= 0)
    right = 2 * (width - 1) - pix_col - first_lane_col
    right_ok = (pix_col <= width - 2) & (right < FOLD_W)
    folded = ()
    for kind in tl.static_range(KINDS):
        folded = folded + (filtered[kind]
                           + tl.load(fold + kind * FOLD_W + left, mask=left_ok, other=0.0)
                           + tl.load(fold + kind * FOLD_W + right, mask=right_ok, other=0.0),)
    return folded


@triton.jit
def _gradient_partials(partials, d, raw, low, high, mask):
    """Add this row's ``sum D``, ``sum D (x - low)`` and min/max tie counts to ``partials``."""
    d = tl.where(mask, d, 0.0)
    return (partials[0] + d, partials[1] + d * (raw - low),
            partials[2] + tl.where(mask & (raw == low), 1.0, 0.0),
            partials[3] + tl.where(mask & (raw == high), 1.0, 0.0))


@triton.jit
def _ssim_tile(levels, tile, taps, taps_ptr, partial_ptr, scratch_ptr, rows_per_tile,
               c1, c2, sqrt_eps, RADIUS: tl.constexpr, BLOCK_W: tl.constexpr,
               PADDING: tl.constexpr, DTYPE: tl.constexpr, USE_L: tl.constexpr,
               USE_C: tl.constexpr, USE_S: tl.constexpr, NORMALIZE: tl.constexpr,
               STORE_MAP: tl.constexpr, GRAD: tl.constexpr, UPSTREAM: tl.constexpr,
               NEED_X: tl.constexpr, NEED_Y: tl.constexpr, SCRATCH_FLOATS: tl.constexpr):
    """SSIM of tile ``tile`` (its sum into the tile's slot of ``partial_ptr``, optionally the
    map) and, with ``GRAD``, the gradient of the weighted SSIM w.r.t. the (normalised) inputs,
    using the program's ``SCRATCH_FLOATS`` of ``scratch_ptr`` (layout as ``scratch_floats``).
    ``taps`` are the window's taps as ``_tap_tuple`` loads them from ``taps_ptr``, which
    reflect padding's border rows read again.

    Without ``GRAD`` a tile is ``rows_per_tile`` output rows by ``BLOCK_W`` output
    columns. With ``GRAD`` it is that many pixel rows by ``BLOCK_W - 2r`` pixel columns: the
    program computes SSIM on the r-column and 2r-row halo the gradient needs, sums SSIM over
    the outputs centred on the tile's pixels, writes ``D = d(weighted SSIM)/dx'`` to the
    level's DX (and DY) in the input dtype, and with ``NORMALIZE`` the partial sums of
    ``NORM_PARTIALS`` per input. The weight is ``UPSTREAM``: 1 on each plane's mean, a
    per-plane gradient on the mean, or a per-pixel gradient of the map.
    """
    level, plane, n, c, run, strip = _locate(levels, tl.cast(tile, tl.int64))
    height = _field(levels, level, F_H)
    # Column arithmetic in int32 (fewer registers for the hoisted per-tap offsets); the
    # op (fastssim._triton_function) keeps (width - 1) * column stride < 2^31. Rows stay int64.
    width = _field(levels, level, F_W).to(tl.int32)
    out_h = _field(levels, level, F_HO)
    out_w = _field(levels, level, F_WO).to(tl.int32)
    x_plane = _plane_ptr(levels, level, F_X, F_SXN, F_SXC, n, c, DTYPE)
    y_plane = _plane_ptr(levels, level, F_Y, F_SYN, F_SYC, n, c, DTYPE)
    sxh = _field(levels, level, F_SXH)
    sxw = _field(levels, level, F_SXW).to(tl.int32)
    syh = _field(levels, level, F_SYH)
    syw = _field(levels, level, F_SYW).to(tl.int32)
    # Per-plane values: normalisation's low, scale and max, or (without it) the shifts.
    norm = _address(levels, level, F_NORM, tl.float32) + plane * _NORM_FIELDS
    if NORMALIZE:
        low_x = tl.load(norm + N_LOW_X)
        scale_x = tl.load(norm + N_SCALE_X)
        high_x = tl.load(norm + N_HIGH_X)
        low_y = tl.load(norm + N_LOW_Y)
        scale_y = tl.load(norm + N_SCALE_Y)
        high_y = tl.load(norm + N_HIGH_Y)
    else:
        low_x = 0.0
        scale_x = 1.0
        high_x = 0.0
        low_y = 0.0
        scale_y = 1.0
        high_y = 0.0
    shift_x = _plane_shift(norm, N_LOW_X, NORMALIZE)
    shift_y = _plane_shift(norm, N_LOW_Y, NORMALIZE)

    # Output q of padded row centre u = q + OFF ("valid" output q is centred on input q + r).
    if PADDING == PAD_VALID:
        OFF: tl.constexpr = RADIUS
    else:
        OFF: tl.constexpr = 0
    lanes = tl.arange(0, BLOCK_W)
    if GRAD:
        OWN_W: tl.constexpr = BLOCK_W - 2 * RADIUS
        first_pix_row = run * rows_per_tile
        end_pix_row = tl.minimum(first_pix_row + rows_per_tile, height)
        first_pix_col = strip.to(tl.int32) * OWN_W
        # Output lanes cover the r columns either side of the owned pixels.
        first_out_col = first_pix_col - OFF - RADIUS
        first_u = first_pix_row - 2 * RADIUS
        steps = end_pix_row - first_pix_row + 4 * RADIUS
        first_out_row = first_pix_row - OFF - 3 * RADIUS
        own_out_col = (lanes >= RADIUS) & (lanes < RADIUS + OWN_W)
    else:
        first_out_row_owned = run * rows_per_tile
        end_out_row = tl.minimum(first_out_row_owned + rows_per_tile, out_h)
        first_out_col = strip.to(tl.int32) * BLOCK_W
        first_u = first_out_row_owned + OFF - RADIUS
        steps = end_out_row - first_out_row_owned + 2 * RADIUS
        first_out_row = first_out_row_owned - 2 * RADIUS
        own_out_col = lanes >= 0
    out_col = first_out_col + lanes
    out_col_ok = (out_col >= 0) & (out_col < out_w)
    centre = out_col + OFF

    # Per-program scratch (L1/L2 resident; layout as ``scratch_floats``): the staged x and y
    # rows, ``ROW_W`` wide; with GRAD, KINDS coefficient rows (r zero columns on the left,
    # 2r on the right) and, for reflect, KINDS fold rows of BLOCK_W + r. Every write is separated by a
    # barrier from the other threads' reads of the previous step: in the gradient by the
    # coefficient rows' barrier; the forward has none, so it alternates two stages.
    # (The program id is re-read here, not carried through the tile loop: one register less.)
    scratch = scratch_ptr + tl.program_id(0).to(tl.int64) * SCRATCH_FLOATS
    ROW_W: tl.constexpr = BLOCK_W + 2 * RADIUS
    COEF_W: tl.constexpr = BLOCK_W + 3 * RADIUS
    FOLD_W: tl.constexpr = BLOCK_W + RADIUS
    if GRAD:
        KINDS: tl.constexpr = 1 + 2 * NEED_X + 2 * NEED_Y
        STAGES: tl.constexpr = 1
    else:
        KINDS: tl.constexpr = 0
        STAGES: tl.constexpr = 2

    zero_row = tl.zeros((BLOCK_W,), dtype=tl.float32)
    ring_row = ()
    for _ in tl.static_range(2 * RADIUS + 1):
        ring_row = ring_row + (zero_row,)
    moments = (ring_row, ring_row, ring_row, ring_row, ring_row)
    ssim_sum = zero_row
    plane_size = out_h * out_w
    if GRAD:
        coef_rings = ()
        for _ in tl.static_range(KINDS):
            coef_rings = coef_rings + (ring_row,)
        partials_x = (zero_row, zero_row, zero_row, zero_row)
        partials_y = (zero_row, zero_row, zero_row, zero_row)
        # The coefficient rows' margins stay zero: edge lanes' windows read them.
        coef_rows = scratch + 2 * STAGES * ROW_W
        for kind in tl.static_range(KINDS):
            margins = coef_rows + kind * COEF_W + lanes
            tl.store(margins, zero_row, mask=lanes < RADIUS)
            tl.store(margins + RADIUS + BLOCK_W, zero_row, mask=lanes < 2 * RADIUS)
        fold = coef_rows + KINDS * COEF_W
        # Strips owning pixels within r of a left or right border, whose mirror images add.
        fold_columns = (PADDING == PAD_REFLECT) & (
            (first_pix_col <= RADIUS) | (first_pix_col + OWN_W >= width - RADIUS))
        if UPSTREAM == UPSTREAM_PIXEL:
            upstream = _address(levels, level, F_UPSTREAM, tl.float32) + plane * plane_size
        elif UPSTREAM == UPSTREAM_PLANE:
            plane_grad = tl.load(_address(levels, level, F_UPSTREAM, tl.float32) + plane)
            plane_grad = plane_grad / plane_size.to(tl.float32)
        else:
            plane_grad = 1.0 / plane_size.to(tl.float32)
        # Pixel lane l is centred like output lane l: the owned ones are own_out_col.
        pix_col = centre
        pix_col_ok = own_out_col & (pix_col < width)
        grad_plane = plane * height * width

    for k in range(steps):
        stage = scratch + (k % STAGES) * 2 * ROW_W
        _stage_row(stage, x_plane, y_plane, first_u + k, first_out_col + OFF - RADIUS, lanes, height,
                   width, sxh, sxw, syh, syw, low_x, scale_x, shift_x, low_y, scale_y, shift_y,
                   ROW_W, BLOCK_W, PADDING, NORMALIZE)
        tl.debug_barrier()
        fresh = _row_moments(stage, lanes, taps, RADIUS, ROW_W)
        moments = (moments[0][1:] + (fresh[0],), moments[1][1:] + (fresh[1],),
                   moments[2][1:] + (fresh[2],), moments[3][1:] + (fresh[3],),
                   moments[4][1:] + (fresh[4],))
        # Output row completed by this step; rows before the window is full are not used.
        q = first_out_row + k
        m_x, m_y, e_xx, e_yy, e_xy = _window_sums(moments, taps, RADIUS)
        var_x = e_xx - m_x * m_x
        var_y = e_yy - m_y * m_y
        cov = e_xy - m_x * m_y
        ssim, d_mx, d_my, d_vx, d_vy, d_cov = _ssim_and_partials(
            m_x + shift_x, m_y + shift_y, var_x, var_y, cov, c1, c2, sqrt_eps, USE_L, USE_C, USE_S)
        out_ok = (q >= 0) & (q < out_h) & (k >= 2 * RADIUS) & out_col_ok
        if GRAD:
            owned = out_ok & own_out_col & (q + OFF >= first_pix_row) & (q + OFF < end_pix_row)
        else:
            owned = out_ok & (q >= first_out_row_owned)
        ssim_sum += tl.where(owned, ssim, 0.0)
        if STORE_MAP:
            map_ptr = _address(levels, level, F_MAP, tl.float32)
            tl.store(map_ptr + plane * plane_size + q * out_w + out_col, ssim, mask=owned)
        if GRAD:
            if UPSTREAM == UPSTREAM_PIXEL:
                g = tl.load(upstream + q * out_w + out_col, mask=out_ok, other=0.0)
            else:
                g = plane_grad
            coefs = (tl.where(out_ok, g * d_cov, 0.0),)
            if NEED_X:
                coefs = coefs + (tl.where(out_ok, g * (d_mx - 2 * m_x * d_vx - m_y * d_cov), 0.0),
                                 tl.where(out_ok, g * d_vx, 0.0))
            if NEED_Y:
                coefs = coefs + (tl.where(out_ok, g * (d_my - 2 * m_y * d_vy - m_x * d_cov), 0.0),
                                 tl.where(out_ok, g * d_vy, 0.0))
            for kind in tl.static_range(KINDS):
                tl.store(coef_rows + kind * COEF_W + RADIUS + lanes, coefs[kind])
            tl.debug_barrier()
            filtered = _transposed_columns(coef_rows, lanes, taps, KINDS, RADIUS, COEF_W)
            if fold_columns:
                filtered = _fold_reflected_columns(filtered, coef_rows, fold, lanes, pix_col, first_pix_col,
                                                   width, taps, KINDS, BLOCK_W, RADIUS, COEF_W, FOLD_W)
            new_rings = ()
            for kind in tl.static_range(KINDS):
                new_rings = new_rings + (coef_rings[kind][1:] + (filtered[kind],),)
            coef_rings = new_rings

            # Pixel row finished by this step: its windows' coefficient rows are all carried.
            i = first_pix_row - 4 * RADIUS + k
            weights = taps
            if PADDING == PAD_REFLECT:
                if (i <= RADIUS) | (i >= height - 1 - RADIUS):
                    # Slot s holds the row centred on i - r + s; mirror images -i and
                    # 2(height-1) - i of the pixel add their weights (the padding's adjoint).
                    weights = ()
                    for slot in tl.static_range(2 * RADIUS + 1):
                        u = i - RADIUS + slot
                        w = taps[slot]
                        top = -i - u
                        bottom = 2 * (height - 1) - i - u
                        w += tl.load(taps_ptr + top + RADIUS, other=0.0,
                                     mask=(i >= 1) & (top >= -RADIUS) & (top <= RADIUS))
                        w += tl.load(taps_ptr + bottom + RADIUS, other=0.0,
                                     mask=(i <= height - 2) & (bottom >= -RADIUS) & (bottom <= RADIUS))
                        weights = weights + (w,)
            pix_ok = pix_col_ok & (i >= first_pix_row) & (i < end_pix_row)
            raw_x = tl.load(x_plane + i * sxh + pix_col * sxw, mask=pix_ok, other=0.0).to(tl.float32)
            raw_y = tl.load(y_plane + i * syh + pix_col * syw, mask=pix_ok, other=0.0).to(tl.float32)
            if NORMALIZE:
                x_s = (raw_x - low_x) * scale_x
                y_s = (raw_y - low_y) * scale_y
            else:
                x_s = raw_x - shift_x
                y_s = raw_y - shift_y
            out_offset = grad_plane + i * width + pix_col
            # G^T of c, then of each input's a and b: D = G^T a + 2 x G^T b + y G^T c.
            g_t = _window_sums(coef_rings, weights, RADIUS)
            if NEED_X:
                d_x = g_t[1] + 2 * x_s * g_t[2] + y_s * g_t[0]
                _store_to_level(levels, level, F_DX, out_offset, d_x.to(DTYPE), pix_ok, DTYPE)
                if NORMALIZE:
                    partials_x = _gradient_partials(partials_x, d_x, raw_x, low_x, high_x, pix_ok)
            if NEED_Y:
                first_y: tl.constexpr = 1 + 2 * NEED_X
                d_y = g_t[first_y] + 2 * y_s * g_t[first_y + 1] + x_s * g_t[0]
                _store_to_level(levels, level, F_DY, out_offset, d_y.to(DTYPE), pix_ok, DTYPE)
                if NORMALIZE:
                    partials_y = _gradient_partials(partials_y, d_y, raw_y, low_y, high_y, pix_ok)

    if GRAD and NORMALIZE:
        NUM_PARTIALS: tl.constexpr = 1 + _NORM_PARTIALS * (NEED_X + NEED_Y)
    else:
        NUM_PARTIALS: tl.constexpr = 1
    slot = partial_ptr + tile * NUM_PARTIALS
    tl.store(slot, tl.sum(ssim_sum, axis=0))
    if GRAD and NORMALIZE:
        for f in tl.static_range(_NORM_PARTIALS):
            if NEED_X:
                tl.store(slot + 1 + f, tl.sum(partials_x[f], axis=0))
            if NEED_Y:
                tl.store(slot + 1 + _NORM_PARTIALS * NEED_X + f, tl.sum(partials_y[f], axis=0))


@triton.jit(do_not_specialize=["num_tiles", "rounds"])
def ssim_stream_kernel(levels, taps_ptr, partial_ptr, scratch_ptr, num_tiles, rounds, rows_per_tile,
                       c1, c2, sqrt_eps, RADIUS: tl.constexpr, BLOCK_W: tl.constexpr,
                       PADDING: tl.constexpr, DTYPE: tl.constexpr, USE_L: tl.constexpr,
                       USE_C: tl.constexpr, USE_S: tl.constexpr, NORMALIZE: tl.constexpr,
                       STORE_MAP: tl.constexpr, GRAD: tl.constexpr, UPSTREAM: tl.constexpr,
                       NEED_X: tl.constexpr, NEED_Y: tl.constexpr, SCRATCH_FLOATS: tl.constexpr,
                       PERSISTENT: tl.constexpr):
    """SSIM (and with ``GRAD`` its gradient) of ``num_tiles`` tiles (see ``_ssim_tile``).

    ``PERSISTENT``: P programs (``stream_programs``) take tiles ``pid + i P`` for
    ``i < rounds = ceil(num_tiles / P)``, so the scratch, one slot of ``SCRATCH_FLOATS``
    (``scratch_floats``) per program, is a fixed workspace however large the input. The
    host passes ``rounds``: a loop of step P made the compiler divide for its trip count (an
    integer division, whose subroutine cost an 8-byte stack frame). Otherwise one program
    per tile (``persistent`` says which launches loop).
    """
    # The taps (``_tap_tuple``) are loaded once per program; reloaded per tile, their
    # pointer was kept in a register across the row loop (an 8-byte stack frame, lean bf16).
    taps = _tap_tuple(taps_ptr, RADIUS)
    if PERSISTENT:
        tile = tl.program_id(0)
        for _ in range(rounds):
            if tile < num_tiles:
                # Every thread's reads of the previous tile's scratch end before this tile
                # writes its first (the coefficient rows' zeroed margins, then a staged row).
                tl.debug_barrier()
                _ssim_tile(levels, tile, taps, taps_ptr, partial_ptr, scratch_ptr, rows_per_tile,
                           c1, c2, sqrt_eps, RADIUS, BLOCK_W, PADDING, DTYPE, USE_L, USE_C, USE_S,
                           NORMALIZE, STORE_MAP, GRAD, UPSTREAM, NEED_X, NEED_Y, SCRATCH_FLOATS)
            tile += tl.num_programs(0)
    else:
        _ssim_tile(levels, tl.program_id(0), taps, taps_ptr, partial_ptr, scratch_ptr, rows_per_tile,
                   c1, c2, sqrt_eps, RADIUS, BLOCK_W, PADDING, DTYPE, USE_L, USE_C, USE_S,
                   NORMALIZE, STORE_MAP, GRAD, UPSTREAM, NEED_X, NEED_Y, SCRATCH_FLOATS)


@triton.jit
def gradient_finish_kernel(d_ptr, x_ptr, out_ptr, plane_ptr, channels, height, width,
                           sxn, sxc, sxh, sxw, TIES: tl.constexpr, BLOCK: tl.constexpr,
                           DTYPE: tl.constexpr):
    """``dx = D * scale + [x == low] tie_low + [x == high] tie_high`` per plane, elementwise.

    ``plane_ptr`` holds five float32 per plane: scale, low, high, tie_low, tie_high (the
    last four read only with ``TIES``). D and dx are contiguous (N, C, H, W).
    """
    plane = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    size = height * width
    mask = offs < size
    values = plane_ptr + plane * 5
    d = tl.load(d_ptr + plane * size + offs, mask=mask, other=0.0).to(tl.float32)
    dx = d * tl.load(values)
    if TIES:
        n = plane // channels
        c = plane % channels
        x = tl.load(x_ptr + n * sxn + c * sxc + (offs // width) * sxh + (offs % width) * sxw,
                    mask=mask, other=0.0).to(tl.float32)
        dx += tl.where(x == tl.load(values + 1), tl.load(values + 3), 0.0)
        dx += tl.where(x == tl.load(values + 2), tl.load(values + 4), 0.0)
    tl.store(out_ptr + plane * size + offs, dx.to(DTYPE), mask=mask)


# ----------------------------------------------------------------------------- launchers

PADDING_CODES = {"valid": 0, "reflect": 1, "zeros": 2}
_TRITON_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


@dataclass(frozen=True)
class Capabilities:
    """What the kernels cover (these 2-D ones and the volume ones in ``kernels/volume.py``);
    dispatch and the custom ops all read ``CAPABILITIES``."""

    dtypes: tuple[torch.dtype, ...]
    paddings: tuple[str, ...]
    max_radius: int         # 2-D maps
    max_volume_radius: int  # 3-D volumes

    def radius_limit(self, spatial_dims: int) -> int:
        """Largest window radius for inputs with ``spatial_dims`` (2 or 3) spatial dimensions."""
        return self.max_radius if spatial_dims == 2 else self.max_volume_radius


# 2-D, radius 24 (49 taps): the carried rows are 5 (2r+1) values per thread in the forward;
# beyond that they no longer fit in registers. 3-D, radius 7 (window 15): each thread also
# carries 2r+1 tap weights per axis; compiled for sm_90 (fp32, reflect, dx and dy) radius 7
# uses up to 255 registers and no spill stack in every volume kernel, radius 8 spills 808
# bytes in the gradient kernel.
CAPABILITIES = Capabilities(dtypes=tuple(_TRITON_DTYPES), paddings=tuple(PADDING_CODES),
                            max_radius=24, max_volume_radius=7)

# Warps per program, one thread per column of a strip.
NUM_WARPS = 4
BLOCK_W = 32 * NUM_WARPS

# Rows of a tile, which a program walks down in one run: long runs amortise the 2r
# (forward) or 4r (gradient) warm-up rows; a runtime argument, so tests can use short runs
# on small images.
ROWS_PER_TILE = 128

# Programs of the persistent stream kernel per multiprocessor (``stream_programs``): a
# bounded grid, so the per-program scratch is a fixed workspace, and at least as many as
# are resident at once for the lean path from window 7 up and with reflect padding (2-4
# programs of 128 threads at 118-255 registers per thread). Windows 3 and 5 with zeros or
# valid padding (72-96 registers, 5-7 resident) leave slots idle: not tuned without a GPU
# (benchmarks/NOTES.md, "Next").
PROGRAMS_PER_SM = 4
# Programs elsewhere (the CPU interpreter, which runs them one after another): few, so the
# tests' small inputs already give each program several tiles.
INTERPRETER_PROGRAMS = 3

# Elements per program of the elementwise gradient finish.
FINISH_BLOCK = 1024


def _device_guard(device: torch.device):
    """Triton launches on the current CUDA device: make it the tensors' device."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _tiles(size: int, tile: int) -> int:
    return -(-size // tile)


def _data_address(tensors: Optional[Sequence[Optional[torch.Tensor]]], level: int) -> int:
    """Data address of ``tensors[level]``, 0 where there is none (the kernel ignores it)."""
    return 0 if tensors is None or tensors[level] is None else tensors[level].data_ptr()


def _opaque(value: int) -> int:
    """``value`` (>= 0) as a level field the kernel reads back exactly and Triton does not
    specialise on (see ``_OPAQUE_BIAS``)."""
    return (value << 4) + _OPAQUE_BIAS


def _magic_divisor(divisor: int) -> tuple[int, int]:
    """``(m, s)`` with ``(v * m) >> s == v // d`` for every ``0 <= v < 2^31`` and ``d = divisor``
    (Granlund and Montgomery): ``s = 31 + ceil(log2 d)`` and ``m = ceil(2^s / d)``.

    ``m <= 2^32``, so ``v * m < 2^63`` fits int64; ``v m / 2^s = v / d + v e / (d 2^s)`` with
    ``e = m d - 2^s < d <= 2^(s - 31)``, so the error term is below ``1 / d`` and the floor is exact.
    """
    shift = 31 + (divisor - 1).bit_length()
    return ((1 << shift) + divisor - 1) // divisor, shift


def _level_args(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor],
                out_sizes: Sequence[tuple[int, int]], grad: bool, radius: int,
                maps=None, upstream=None, dxs=None, dys=None,
                plane_values=None) -> tuple[tuple, list[int]]:
    """The per-level kernel arguments: addresses, strides, sizes and tile ranges.

    Returns a tuple per level of its ``NUM_FIELDS`` fields (``F_*`` order, each
    ``_opaque``), host integers only, and the per-level tile counts.
    """
    levels, counts = [], []
    for lvl, (x, y) in enumerate(zip(xs, ys)):
        n, c, h, w = x.shape
        ho, wo = out_sizes[lvl]
        if grad:
            runs, strips = _tiles(h, ROWS_PER_TILE), _tiles(w, BLOCK_W - 2 * radius)
        else:
            runs, strips = _tiles(ho, ROWS_PER_TILE), _tiles(wo, BLOCK_W)
        fields = (x.data_ptr(), y.data_ptr(), *x.stride(), *y.stride(), c, h, w, ho, wo, strips,
                  runs * strips, sum(counts), _data_address(maps, lvl), _data_address(upstream, lvl),
                  _data_address(dxs, lvl), _data_address(dys, lvl), _data_address(plane_values, lvl),
                  *_magic_divisor(c), *_magic_divisor(strips), *_magic_divisor(runs * strips))
        levels.append(tuple(_opaque(v) for v in fields))
        counts.append(n * c * runs * strips)
    return tuple(levels), counts


@dataclass(frozen=True)
class KernelSettings:
    """SSIM settings in the kernels' own terms, built once per call by the custom op."""

    taps: torch.Tensor     # float32 (2r+1,) Gaussian taps on the inputs' device (symmetric)
    c1: float
    c2: float
    sqrt_eps: float
    padding: int           # PADDING_CODES value
    use_l: bool
    use_c: bool
    use_s: bool

    @property
    def radius(self) -> int:
        return (self.taps.numel() - 1) // 2

    def output_size(self, *sides: int) -> tuple[int, ...]:
        """Spatial size of the SSIM map of an input of spatial size ``sides``."""
        if self.padding == PADDING_CODES["valid"]:
            return tuple(side - 2 * self.radius for side in sides)
        return tuple(sides)

    def launch_args(self, dtype: torch.dtype) -> dict:
        return dict(c1=self.c1, c2=self.c2, sqrt_eps=self.sqrt_eps, RADIUS=self.radius, BLOCK_W=BLOCK_W, PADDING=self.padding,
                    DTYPE=_TRITON_DTYPES[dtype], USE_L=self.use_l, USE_C=self.use_c,
                    USE_S=self.use_s, num_warps=NUM_WARPS)


def scratch_floats(radius: int, padding: int, grad: bool, need_x: bool, need_y: bool) -> int:
    """Float32 scratch per program of ``ssim_stream_kernel``, in its order: the staged x and
    y rows (two stages without ``grad``, one with), ``BLOCK_W + 2r`` wide; with ``grad``,
    ``kinds = 1 + 2 need_x + 2 need_y`` coefficient rows of ``BLOCK_W + 3r``, then for
    reflect padding ``kinds`` fold rows of ``BLOCK_W + r``."""
    kinds = 1 + 2 * need_x + 2 * need_y if grad else 0
    stages = 1 if grad else 2
    fold_rows = kinds if padding == PADDING_CODES["reflect"] else 0
    return (2 * stages * (BLOCK_W + 2 * radius) + kinds * (BLOCK_W + 3 * radius)
            + fold_rows * (BLOCK_W + radius))


def persistent(grad: bool, upstream: int, need_x: bool, need_y: bool) -> bool:
    """Whether ``ssim_stream_kernel`` runs a persistent grid: for the lean training step
    only (the gradient of the plain means, ``UPSTREAM_MEAN``, to one input: the forward
    that writes D), where D and the scratch are alive together and issue #8 bounds the
    memory. The tile loop costs registers (up to 2x at window 11, fewer programs per SM;
    benchmarks/NOTES.md, "Reading"), so every other launch keeps one program per tile, its
    scratch freed when it returns: the forward, the gradient to both inputs (no register
    to spare at window 15) and the general backward with an upstream gradient (persistent,
    it took 128-168 registers where 96-101 do and spilled 8-16 B at windows 5 and 7)."""
    return bool(grad and upstream == UPSTREAM_MEAN.value and need_x != need_y)


def stream_programs(device: torch.device, tiles: int, is_persistent: bool) -> int:
    """Programs of the ``ssim_stream_kernel`` grid for ``tiles`` tiles: one per tile unless
    ``is_persistent``, then at most ``PROGRAMS_PER_SM`` per multiprocessor of a CUDA
    ``device`` and at most ``INTERPRETER_PROGRAMS`` elsewhere."""
    if not is_persistent:
        return tiles
    if device.type == "cuda":
        cap = PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        cap = INTERPRETER_PROGRAMS
    return max(1, min(tiles, cap))


def _launch_stream(levels: tuple, counts: Sequence[int], settings: KernelSettings, dtype: torch.dtype,
                   device: torch.device, fields: int, **flags) -> torch.Tensor:
    """One launch of ``ssim_stream_kernel`` over the tiles of ``levels`` (``counts`` per level)
    with the constexpr ``flags``; returns the float32 ``(tiles, fields)`` per-tile partial sums."""
    tiles = sum(counts)
    per_program = scratch_floats(settings.radius, settings.padding, flags["GRAD"], flags["NEED_X"],
                                 flags["NEED_Y"])
    is_persistent = persistent(flags["GRAD"], flags["UPSTREAM"], flags["NEED_X"], flags["NEED_Y"])
    programs = stream_programs(device, tiles, is_persistent)
    # Tile ids (up to tiles - 1 + programs in a persistent loop's last round) and partial
    # offsets are int32.
    limit = min(2 ** 31 // fields, 2 ** 31 - programs)
    if tiles >= limit:
        raise ValueError(f"an SSIM call may cover at most {limit - 1} tiles of {ROWS_PER_TILE}x"
                         f"{BLOCK_W} pixels, these inputs need {tiles}: split them into several calls")
    partials = torch.empty(tiles, fields, device=device, dtype=torch.float32)
    scratch = torch.empty(programs * per_program, device=device, dtype=torch.float32)
    with _device_guard(device):
        ssim_stream_kernel[(programs,)](
            levels, settings.taps, partials, scratch, tiles, _tiles(tiles, programs), ROWS_PER_TILE,
            SCRATCH_FLOATS=per_program, PERSISTENT=is_persistent, **flags, **settings.launch_args(dtype))
    return partials


def ssim_forward(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], settings: KernelSettings,
                 per_pixel: bool, plane_values: Sequence[torch.Tensor], normalize: bool) -> list[torch.Tensor]:
    """SSIM of every level in one launch, without gradient.

    ``plane_values[l]`` holds ``NORM_FIELDS`` float32 per plane of level l: with
    ``normalize`` the inputs are normalised as ``(x - low) * scale`` at load time,
    otherwise fields ``N_LOW_X`` and ``N_LOW_Y`` hold the planes' shifts. Returns per level the float32
    SSIM map ``(N, C, H', W')`` when ``per_pixel``, else the per-channel mean ``(N, C)``,
    reduced from per-tile partial sums in a fixed order.
    """
    device = xs[0].device
    out_sizes = [settings.output_size(*x.shape[-2:]) for x in xs]
    maps = ([torch.empty(x.shape[:2] + out, device=device, dtype=torch.float32)
             for x, out in zip(xs, out_sizes)] if per_pixel else None)
    levels, counts = _level_args(xs, ys, out_sizes, False, settings.radius, maps=maps, plane_values=plane_values)
    partials = _launch_stream(levels, counts, settings, xs[0].dtype, device, 1, NORMALIZE=normalize,
                              STORE_MAP=per_pixel, GRAD=False, UPSTREAM=UPSTREAM_MEAN, NEED_X=False,
                              NEED_Y=False)
    if per_pixel:
        return maps
    return [part.view(*x.shape[:2], -1).sum(dim=-1) / (ho * wo)
            for x, part, (ho, wo) in zip(xs, partials.view(-1).split(counts), out_sizes)]


def ssim_gradient(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], settings: KernelSettings,
                  need_x: bool, need_y: bool, plane_values: Sequence[torch.Tensor], normalize: bool,
                  upstream: Optional[Sequence[torch.Tensor]] = None, per_pixel: bool = False):
    """SSIM and its gradient in one launch for all levels.

    The gradient is that of ``sum_l sum(w_l * ssim_l)`` with ``w_l`` the per-channel means'
    weights ``upstream[l]`` ``(N, C)``, or the map's ``(N, C, H', W')`` when ``per_pixel``,
    or 1 on each per-channel mean when ``upstream`` is None. ``plane_values`` as in
    :func:`ssim_forward`; with ``normalize`` the gradient is w.r.t. the normalised inputs.

    Returns ``(means, dxs, dys, sums)``: the per-channel mean SSIM ``(N, C)`` per level, the
    gradients (contiguous, input dtype; empty lists when not needed), and with ``normalize``
    per level the float32 ``(N, C, NORM_PARTIALS * (need_x + need_y))`` plane sums of
    ``D``, ``D (x - low)`` and the counts of pixels equal to the min and to the max
    (x's first, then y's), else an empty list.
    """
    device = xs[0].device
    out_sizes = [settings.output_size(*x.shape[-2:]) for x in xs]
    dxs = [torch.empty(x.shape, device=device, dtype=x.dtype) for x in xs] if need_x else []
    dys = [torch.empty(y.shape, device=device, dtype=y.dtype) for y in ys] if need_y else []
    levels, counts = _level_args(xs, ys, out_sizes, True, settings.radius, upstream=upstream,
                                 dxs=dxs or None, dys=dys or None, plane_values=plane_values)
    fields = 1 + (NORM_PARTIALS * (need_x + need_y) if normalize else 0)
    source = UPSTREAM_MEAN if upstream is None else (UPSTREAM_PIXEL if per_pixel else UPSTREAM_PLANE)
    partials = _launch_stream(levels, counts, settings, xs[0].dtype, device, fields, NORMALIZE=normalize,
                              STORE_MAP=False, GRAD=True, UPSTREAM=source, NEED_X=need_x, NEED_Y=need_y)
    plane_sums = [part.view(*x.shape[:2], -1, fields).sum(dim=2)
                  for x, part in zip(xs, partials.split(counts))]
    means = [sums[..., 0] / (ho * wo) for sums, (ho, wo) in zip(plane_sums, out_sizes)]
    return means, dxs, dys, ([sums[..., 1:] for sums in plane_sums] if normalize else [])


def finish_gradient(d: torch.Tensor, x: torch.Tensor, plane_values: torch.Tensor, ties: bool) -> torch.Tensor:
    """``d * scale`` plus, with ``ties``, the min/max tie terms, per plane (see the kernel).

    ``d`` is contiguous ``(N, C, H, W)``; ``plane_values`` float32 ``(N, C, 5)`` contiguous.
    Returns a new contiguous tensor in ``d``'s dtype.
    """
    out = torch.empty_like(d)
    n, c, h, w = d.shape
    with _device_guard(d.device):
        gradient_finish_kernel[(_tiles(h * w, FINISH_BLOCK), n * c)](
            d, x, out, plane_values, c, h, w, *x.stride(), TIES=ties, BLOCK=FINISH_BLOCK,
            DTYPE=_TRITON_DTYPES[d.dtype])
    return out
