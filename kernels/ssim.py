"""Fused Gaussian-windowed SSIM kernels over a packed list of NCHW maps.

Design (see benchmarks/NOTES.md for why):
- One launch covers every level of a call (e.g. all FPN levels): a small int64 table
  holds, per level, the data addresses, strides, sizes and the first program id of the
  level; each program finds its level, its (sample, channel) plane and its tile.
- A program owns a tile of TILE_H = BLOCK - 2r output rows by BLOCK_W columns. Triton
  has no addressable shared memory, so the separable Gaussian is split: the horizontal
  pass sums 2r+1 column-shifted loads of the BLOCK input rows (cache hits after the
  first), the vertical pass is a product with a banded BLOCK x BLOCK matrix. Padding is
  applied as index mapping at load time.
- Backward is two stencils: ``ssim_coef_kernel`` turns the moments into the per-pixel
  coefficients (a, b, c) of DESIGN.md, and ``ssim_grad_kernel`` applies the transposed
  filter to them: shifted loads for the columns, a band matrix for the rows, and for
  reflect padding the mirror images of each pixel added in both, which folds the
  reflected border back onto its source pixels.
- Reductions are deterministic: each program writes its tile's partial sum to its own
  slot; the caller sums the slots in a fixed order. No atomics.
Statistics accumulate in float32 whatever the input dtype; dot products use IEEE fp32.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

# Padding modes (constexpr switches).
PAD_VALID = tl.constexpr(0)
PAD_REFLECT = tl.constexpr(1)
PAD_ZEROS = tl.constexpr(2)

# Columns of the per-level int64 table built by ``level_table``.
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
F_OUT_TILES_W = tl.constexpr(15)
F_OUT_TILES = tl.constexpr(16)
F_OUT_START = tl.constexpr(17)
F_IN_TILES_W = tl.constexpr(18)
F_IN_TILES = tl.constexpr(19)
F_IN_START = tl.constexpr(20)
F_MAP = tl.constexpr(21)
F_GRAD = tl.constexpr(22)
F_COEF = tl.constexpr(23)
F_DX = tl.constexpr(24)
F_DY = tl.constexpr(25)
F_PLANES = tl.constexpr(26)
NUM_FIELDS = tl.constexpr(27)

DOT_PRECISION = tl.constexpr("ieee")


@triton.jit
def _find_level(table_ptr, pid, START: tl.constexpr, NUM_LEVELS: tl.constexpr):
    """Index of the level whose program range contains ``pid`` (levels are few)."""
    level = 0
    for lvl in tl.static_range(1, NUM_LEVELS):
        start = tl.load(table_ptr + lvl * NUM_FIELDS + START)
        level = tl.where(pid >= start, lvl, level)
    return level


@triton.jit
def _locate_tile(table_ptr, pid, START: tl.constexpr, TILES_W: tl.constexpr, TILES: tl.constexpr,
                 NUM_LEVELS: tl.constexpr, TILE_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Table row, sample, channel and first row/column of program ``pid``'s tile.

    Programs of a level are ordered by (sample, channel) plane, then tile, row-major.
    """
    level = _find_level(table_ptr, pid, START, NUM_LEVELS)
    row = table_ptr + level * NUM_FIELDS
    tiles_w = tl.load(row + TILES_W)
    tiles = tl.load(row + TILES)
    local = pid - tl.load(row + START)
    plane = local // tiles
    tile = local % tiles
    channels = tl.load(row + F_C)
    first_row = (tile // tiles_w) * TILE_H
    first_col = (tile % tiles_w) * BLOCK_W
    return row, plane, plane // channels, plane % channels, first_row, first_col


@triton.jit
def _plane_ptr(row, PTR: tl.constexpr, N_STRIDE: tl.constexpr, C_STRIDE: tl.constexpr, n, c,
               DTYPE: tl.constexpr):
    """Pointer to plane (n, c) of the level's x or y."""
    base = tl.load(row + PTR).to(tl.pointer_type(DTYPE))
    return base + n * tl.load(row + N_STRIDE) + c * tl.load(row + C_STRIDE)


@triton.jit
def _source_index(u, size, PADDING: tl.constexpr):
    """Map padded coordinates to source coordinates; the caller masks ``0 <= . < size``."""
    if PADDING == PAD_REFLECT:
        u = tl.where(u < 0, -u, u)
        u = tl.where(u > size - 1, 2 * (size - 1) - u, u)
    return u


@triton.jit
def _taps(taps_ptr, d, RADIUS: tl.constexpr):
    """Gaussian weight g(d), zero outside the window."""
    inside = (d >= -RADIUS) & (d <= RADIUS)
    return tl.load(taps_ptr + d + RADIUS, mask=inside, other=0.0)


@triton.jit
def _band(taps_ptr, BLOCK: tl.constexpr, RADIUS: tl.constexpr):
    """Banded matrix W[a, b] = g(b - a - r): output a of a tile reads inputs a .. a + 2r."""
    idx = tl.arange(0, BLOCK)
    return _taps(taps_ptr, idx[None, :] - idx[:, None] - RADIUS, RADIUS)


@triton.jit
def _folded_band(taps_ptr, start, size, BLOCK: tl.constexpr, RADIUS: tl.constexpr,
                 PADDING: tl.constexpr):
    """Transposed-filter matrix for pixels ``start + a`` of a dimension of length ``size``.

    Row a holds the weights of the coefficient rows the caller loads (b = 0 .. BLOCK-1)
    on pixel ``i = start + a``: the plain band. For reflect padding the pixel also appears at
    its mirror images ``-i`` and ``2(size-1) - i`` of the padded map, whose weights are
    added: that is the adjoint of reflect padding.
    """
    w = _band(taps_ptr, BLOCK, RADIUS)
    if PADDING == PAD_REFLECT:
        idx = tl.arange(0, BLOCK)
        i = (start + idx)[:, None]
        b = idx[None, :]
        top = _taps(taps_ptr, -2 * start - idx[:, None] + RADIUS - b, RADIUS)
        bottom = _taps(taps_ptr, 2 * (size - 1) - 2 * start - idx[:, None] + RADIUS - b, RADIUS)
        w += tl.where(i >= 1, top, 0.0) + tl.where(i <= size - 2, bottom, 0.0)
    return w


@triton.jit
def _vertical(band, m):
    """Vertical pass ``band @ m`` in IEEE fp32 (row a of the result filters rows a..a+2r)."""
    return tl.dot(band, m, input_precision=DOT_PRECISION)


@triton.jit
def _load_cols(row_ptrs, row_ok, cols, width):
    """Float32 tile at ``cols`` of the given rows, zero where a row or column is outside."""
    mask = row_ok[:, None] & ((cols >= 0) & (cols < width))[None, :]
    return tl.load(row_ptrs + cols[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _transposed_row_filter(row_ptrs, row_ok, col0, width, out_w, taps_ptr, BLOCK_W: tl.constexpr,
                           OFFSET: tl.constexpr, RADIUS: tl.constexpr, PADDING: tl.constexpr):
    """Horizontal transposed filter of coefficient rows at pixel columns ``col0 + j``.

    Pixel column j collects g(d) a(u - OFFSET - d) over taps d and over its images u in
    the padded map: j itself and, for reflect padding, -j (j >= 1) and 2(width-1) - j
    (j <= width - 2). Mirror images only reach the r columns next to each border, so
    interior tiles skip them; invalid images get column -1, which is masked.
    """
    pix_c = col0 + tl.arange(0, BLOCK_W)
    acc = tl.zeros((row_ptrs.shape[0], BLOCK_W), dtype=tl.float32)
    for t in tl.static_range(2 * RADIUS + 1):
        acc += tl.load(taps_ptr + t) * _load_cols(row_ptrs, row_ok, pix_c - OFFSET - (t - RADIUS), out_w)
    if PADDING == PAD_REFLECT:
        if (col0 <= RADIUS) | (col0 + BLOCK_W - 1 >= width - 1 - RADIUS):
            for t in tl.static_range(2 * RADIUS + 1):
                d = t - RADIUS
                top = tl.where(pix_c >= 1, -pix_c - d, -1)
                bottom = tl.where(pix_c <= width - 2, 2 * (width - 1) - pix_c - d, -1)
                acc += tl.load(taps_ptr + t) * (_load_cols(row_ptrs, row_ok, top, out_w)
                                                + _load_cols(row_ptrs, row_ok, bottom, out_w))
    return acc


@triton.jit
def _transposed_filter(row_ptrs, row_ok, band, col0, width, out_w, taps_ptr, BLOCK_W: tl.constexpr,
                       OFFSET: tl.constexpr, RADIUS: tl.constexpr, PADDING: tl.constexpr):
    """``G^T`` of one coefficient kind on a pixel tile: columns by loads, rows by ``band``."""
    return _vertical(band, _transposed_row_filter(row_ptrs, row_ok, col0, width, out_w, taps_ptr,
                                                  BLOCK_W, OFFSET, RADIUS, PADDING))


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
def _tile_statistics(table_ptr, taps_ptr, pid, NUM_LEVELS: tl.constexpr, RADIUS: tl.constexpr,
                     BLOCK: tl.constexpr, BLOCK_W: tl.constexpr, PADDING: tl.constexpr,
                     DTYPE: tl.constexpr):
    """Locate the output tile of ``pid`` and compute its five local statistics.

    Returns the level's table row, the plane index, output row/col indices and the
    validity mask of the tile, and mu_x, mu_y, var_x, var_y, cov (fp32, BLOCK x BLOCK_W).
    """
    TILE_H: tl.constexpr = BLOCK - 2 * RADIUS
    row, plane, n, c, q0, p0 = _locate_tile(table_ptr, pid, F_OUT_START, F_OUT_TILES_W, F_OUT_TILES,
                                            NUM_LEVELS, TILE_H, BLOCK_W)
    height = tl.load(row + F_H)
    width = tl.load(row + F_W)
    out_h = tl.load(row + F_HO)
    out_w = tl.load(row + F_WO)
    # Output q reads padded rows q-r .. q+r; "valid" output q is centred on input q+r.
    if PADDING == PAD_VALID:
        first = 0
    else:
        first = -RADIUS
    rows = tl.arange(0, BLOCK)
    cols = tl.arange(0, BLOCK_W)
    src_r = _source_index(q0 + first + rows, height, PADDING)
    row_ok = (src_r >= 0) & (src_r < height)
    x_rows = _plane_ptr(row, F_X, F_SXN, F_SXC, n, c, DTYPE) + src_r[:, None] * tl.load(row + F_SXH)
    y_rows = _plane_ptr(row, F_Y, F_SYN, F_SYC, n, c, DTYPE) + src_r[:, None] * tl.load(row + F_SYH)
    x_col_stride = tl.load(row + F_SXW)
    y_col_stride = tl.load(row + F_SYW)

    # Horizontal pass: the 2r+1 shifted loads of a tap hit the cache after the first.
    h_x = tl.zeros((BLOCK, BLOCK_W), dtype=tl.float32)
    h_y = tl.zeros((BLOCK, BLOCK_W), dtype=tl.float32)
    h_xx = tl.zeros((BLOCK, BLOCK_W), dtype=tl.float32)
    h_yy = tl.zeros((BLOCK, BLOCK_W), dtype=tl.float32)
    h_xy = tl.zeros((BLOCK, BLOCK_W), dtype=tl.float32)
    for t in tl.static_range(2 * RADIUS + 1):
        src_c = _source_index(p0 + first + cols + t, width, PADDING)
        mask = row_ok[:, None] & ((src_c >= 0) & (src_c < width))[None, :]
        x = tl.load(x_rows + src_c[None, :] * x_col_stride, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(y_rows + src_c[None, :] * y_col_stride, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(taps_ptr + t)
        gx = g * x
        gy = g * y
        h_x += gx
        h_y += gy
        h_xx += gx * x
        h_yy += gy * y
        h_xy += gx * y

    band = _band(taps_ptr, BLOCK, RADIUS)
    mu_x = _vertical(band, h_x)
    mu_y = _vertical(band, h_y)
    var_x = _vertical(band, h_xx) - mu_x * mu_x
    var_y = _vertical(band, h_yy) - mu_y * mu_y
    cov = _vertical(band, h_xy) - mu_x * mu_y

    out_r = q0 + rows
    out_c = p0 + cols
    out_mask = ((rows < TILE_H) & (out_r < out_h))[:, None] & (out_c < out_w)[None, :]
    return row, plane, out_r, out_c, out_mask, mu_x, mu_y, var_x, var_y, cov


@triton.jit
def ssim_forward_kernel(table_ptr, taps_ptr, partial_ptr, c1, c2, sqrt_eps,
                        NUM_LEVELS: tl.constexpr, RADIUS: tl.constexpr, BLOCK: tl.constexpr,
                        BLOCK_W: tl.constexpr, PADDING: tl.constexpr, DTYPE: tl.constexpr,
                        USE_L: tl.constexpr,
                        USE_C: tl.constexpr, USE_S: tl.constexpr, STORE_MAP: tl.constexpr):
    """SSIM of one output tile: its sum into ``partial_ptr[pid]``, optionally the map."""
    pid = tl.program_id(0).to(tl.int64)
    row, plane, out_r, out_c, out_mask, mu_x, mu_y, var_x, var_y, cov = _tile_statistics(
        table_ptr, taps_ptr, pid, NUM_LEVELS, RADIUS, BLOCK, BLOCK_W, PADDING, DTYPE)
    s = _ssim_and_partials(mu_x, mu_y, var_x, var_y, cov, c1, c2, sqrt_eps, USE_L, USE_C, USE_S)[0]
    s = tl.where(out_mask, s, 0.0)
    tl.store(partial_ptr + pid, tl.sum(tl.sum(s, axis=1), axis=0))
    if STORE_MAP:
        out_h = tl.load(row + F_HO)
        out_w = tl.load(row + F_WO)
        map_ptr = tl.load(row + F_MAP).to(tl.pointer_type(tl.float32))
        offs = plane * out_h * out_w + out_r[:, None] * out_w + out_c[None, :]
        tl.store(map_ptr + offs, s, mask=out_mask)


@triton.jit
def ssim_coef_kernel(table_ptr, taps_ptr, coef_ptr, c1, c2, sqrt_eps,
                     NUM_LEVELS: tl.constexpr, RADIUS: tl.constexpr, BLOCK: tl.constexpr,
                     BLOCK_W: tl.constexpr, PADDING: tl.constexpr, DTYPE: tl.constexpr,
                     USE_L: tl.constexpr,
                     USE_C: tl.constexpr, USE_S: tl.constexpr, GRAD_PER_PIXEL: tl.constexpr,
                     NEED_X: tl.constexpr, NEED_Y: tl.constexpr):
    """Backward stencil 1: per output pixel, the coefficients of the gradient.

    With g the upstream gradient of the pixel (for a per-channel mean: the channel's
    gradient over the pixel count), writes ``c = g dS/dcov`` and, per input needing a
    gradient, ``a_x = g (dS/dmu_x - 2 mu_x dS/dvar_x - mu_y dS/dcov)``, ``b_x = g dS/dvar_x``
    (and the same with x and y swapped), as planes of the level's slice of ``coef_ptr``.
    """
    pid = tl.program_id(0).to(tl.int64)
    row, plane, out_r, out_c, out_mask, mu_x, mu_y, var_x, var_y, cov = _tile_statistics(
        table_ptr, taps_ptr, pid, NUM_LEVELS, RADIUS, BLOCK, BLOCK_W, PADDING, DTYPE)
    _, d_mx, d_my, d_vx, d_vy, d_cov = _ssim_and_partials(
        mu_x, mu_y, var_x, var_y, cov, c1, c2, sqrt_eps, USE_L, USE_C, USE_S)
    out_h = tl.load(row + F_HO)
    out_w = tl.load(row + F_WO)
    plane_size = out_h * out_w
    grad_ptr = tl.load(row + F_GRAD).to(tl.pointer_type(tl.float32))
    pixel = out_r[:, None] * out_w + out_c[None, :]
    if GRAD_PER_PIXEL:
        g = tl.load(grad_ptr + plane * plane_size + pixel, mask=out_mask, other=0.0)
    else:
        g = tl.load(grad_ptr + plane) / plane_size.to(tl.float32)
    base = coef_ptr + tl.load(row + F_COEF) + plane * plane_size + pixel
    stride = tl.load(row + F_PLANES) * plane_size  # between coefficient kinds
    tl.store(base, g * d_cov, mask=out_mask)
    if NEED_X:
        tl.store(base + stride, g * (d_mx - 2 * mu_x * d_vx - mu_y * d_cov), mask=out_mask)
        tl.store(base + 2 * stride, g * d_vx, mask=out_mask)
    if NEED_Y:
        first_y: tl.constexpr = 1 + 2 * NEED_X
        tl.store(base + first_y * stride, g * (d_my - 2 * mu_y * d_vy - mu_x * d_cov), mask=out_mask)
        tl.store(base + (first_y + 1) * stride, g * d_vy, mask=out_mask)


@triton.jit
def ssim_grad_kernel(table_ptr, taps_ptr, coef_ptr,
                     NUM_LEVELS: tl.constexpr, RADIUS: tl.constexpr, BLOCK: tl.constexpr,
                     BLOCK_W: tl.constexpr, PADDING: tl.constexpr, DTYPE: tl.constexpr,
                     NEED_X: tl.constexpr, NEED_Y: tl.constexpr):
    """Backward stencil 2: ``dx = G^T a_x + 2 x G^T b_x + y G^T c`` on one input tile.

    ``G^T`` is the transposed Gaussian filter including the adjoint of the padding, so
    the result is the gradient w.r.t. the unpadded input; likewise ``dy``.
    """
    pid = tl.program_id(0).to(tl.int64)
    TILE_H: tl.constexpr = BLOCK - 2 * RADIUS
    row, plane, n, c, i0, j0 = _locate_tile(table_ptr, pid, F_IN_START, F_IN_TILES_W, F_IN_TILES,
                                            NUM_LEVELS, TILE_H, BLOCK_W)
    height = tl.load(row + F_H)
    width = tl.load(row + F_W)
    out_h = tl.load(row + F_HO)
    out_w = tl.load(row + F_WO)
    rows = tl.arange(0, BLOCK)
    pix_r = i0 + rows
    pix_c = j0 + tl.arange(0, BLOCK_W)

    # Coefficient rows whose windows can touch pixel rows i0 .. i0 + TILE_H - 1; a
    # "valid" output q is centred on pixel q + r. Zero outside the output grid, which
    # makes G^T the full, zero-extended convolution.
    if PADDING == PAD_VALID:
        OFFSET: tl.constexpr = RADIUS
    else:
        OFFSET: tl.constexpr = 0
    coef_r = i0 - OFFSET - RADIUS + rows
    coef_row_ok = (coef_r >= 0) & (coef_r < out_h)
    plane_size = out_h * out_w
    stride = tl.load(row + F_PLANES) * plane_size
    coef_rows = (coef_ptr + tl.load(row + F_COEF) + plane * plane_size
                 + coef_r[:, None] * out_w)
    band = _folded_band(taps_ptr, i0, height, BLOCK, RADIUS, PADDING)
    g_cov = _transposed_filter(coef_rows, coef_row_ok, band, j0, width, out_w,
                               taps_ptr, BLOCK_W, OFFSET, RADIUS, PADDING)

    pix_mask = ((rows < TILE_H) & (pix_r < height))[:, None] & (pix_c < width)[None, :]
    x_ptrs = (_plane_ptr(row, F_X, F_SXN, F_SXC, n, c, DTYPE) + pix_r[:, None] * tl.load(row + F_SXH)
              + pix_c[None, :] * tl.load(row + F_SXW))
    y_ptrs = (_plane_ptr(row, F_Y, F_SYN, F_SYC, n, c, DTYPE) + pix_r[:, None] * tl.load(row + F_SYH)
              + pix_c[None, :] * tl.load(row + F_SYW))
    x = tl.load(x_ptrs, mask=pix_mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptrs, mask=pix_mask, other=0.0).to(tl.float32)
    # Gradients are written contiguous (N, C, H, W) in the input dtype.
    grad_off = plane * height * width + pix_r[:, None] * width + pix_c[None, :]
    if NEED_X:
        g_a = _transposed_filter(coef_rows + stride, coef_row_ok, band, j0, width, out_w,
                                 taps_ptr, BLOCK_W, OFFSET, RADIUS, PADDING)
        g_b = _transposed_filter(coef_rows + 2 * stride, coef_row_ok, band, j0, width, out_w,
                                 taps_ptr, BLOCK_W, OFFSET, RADIUS, PADDING)
        dx_ptr = tl.load(row + F_DX).to(tl.pointer_type(DTYPE))
        tl.store(dx_ptr + grad_off, (g_a + 2 * x * g_b + y * g_cov).to(DTYPE), mask=pix_mask)
    if NEED_Y:
        first_y: tl.constexpr = 1 + 2 * NEED_X
        g_a = _transposed_filter(coef_rows + first_y * stride, coef_row_ok, band, j0, width, out_w,
                                 taps_ptr, BLOCK_W, OFFSET, RADIUS, PADDING)
        g_b = _transposed_filter(coef_rows + (first_y + 1) * stride, coef_row_ok, band, j0, width, out_w,
                                 taps_ptr, BLOCK_W, OFFSET, RADIUS, PADDING)
        dy_ptr = tl.load(row + F_DY).to(tl.pointer_type(DTYPE))
        tl.store(dy_ptr + grad_off, (g_a + 2 * y * g_b + x * g_cov).to(DTYPE), mask=pix_mask)


# ----------------------------------------------------------------------------- launchers

PADDING_CODES = {"valid": 0, "reflect": 1, "zeros": 2}
_TRITON_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}
MAX_RADIUS = 24


def block_size(radius: int) -> int:
    """Rows of a tile's input region: 32 keeps the band product cheapest for windows up
    to 17 (22 output rows for 11x11), 64 beyond."""
    return 32 if 2 * radius <= 16 else 64


# Output columns of a tile (the horizontal pass needs no halo in the tile's shape).
BLOCK_W = 32


# Warps per program: 8 rather than 4 halves each thread's share of a tile, which removes
# most register spills (benchmarks/kernel_resources.py reports them).
NUM_WARPS = 8


def _device_guard(device: torch.device):
    """Triton launches on the current CUDA device: make it the tensors' device."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _tiles(size: int, tile: int) -> int:
    return -(-size // tile)


def _level_table(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor],
                 out_sizes: Sequence[tuple[int, int]], tile_h: int,
                 maps: Optional[Sequence[torch.Tensor]] = None,
                 grads: Optional[Sequence[torch.Tensor]] = None,
                 coef_offsets: Optional[Sequence[int]] = None,
                 dxs: Optional[Sequence[Optional[torch.Tensor]]] = None,
                 dys: Optional[Sequence[Optional[torch.Tensor]]] = None) -> tuple[torch.Tensor, int, int]:
    """The per-level int64 table of addresses, strides, sizes and program ranges.

    Returns the table on the inputs' device, the per-level program counts of the
    output-tiled (forward, coefficient) kernels and the total of the input-tiled
    (gradient) kernel.
    """
    rows, out_counts, in_start = [], [], 0
    for lvl, (x, y) in enumerate(zip(xs, ys)):
        n, c, h, w = x.shape
        ho, wo = out_sizes[lvl]
        out_tiles_w, in_tiles_w = _tiles(wo, BLOCK_W), _tiles(w, BLOCK_W)
        out_tiles, in_tiles = _tiles(ho, tile_h) * out_tiles_w, _tiles(h, tile_h) * in_tiles_w
        rows.append([x.data_ptr(), y.data_ptr(), *x.stride(), *y.stride(), c, h, w, ho, wo,
                     out_tiles_w, out_tiles, sum(out_counts), in_tiles_w, in_tiles, in_start,
                     _address(maps, lvl), _address(grads, lvl),
                     0 if coef_offsets is None else coef_offsets[lvl],
                     _address(dxs, lvl), _address(dys, lvl), n * c])
        out_counts.append(n * c * out_tiles)
        in_start += n * c * in_tiles
    table = torch.tensor(rows, dtype=torch.int64).to(xs[0].device, non_blocking=True)
    return table, out_counts, in_start


def _address(tensors: Optional[Sequence[Optional[torch.Tensor]]], level: int) -> int:
    """Data address of ``tensors[level]``, 0 where there is none (the kernel ignores it)."""
    return 0 if tensors is None or tensors[level] is None else tensors[level].data_ptr()


def _layout_args(radius: int, padding: str, dtype: torch.dtype, num_levels: int) -> dict:
    block = block_size(radius)
    return dict(NUM_LEVELS=num_levels, RADIUS=radius, BLOCK=block, BLOCK_W=BLOCK_W,
                PADDING=PADDING_CODES[padding],
                DTYPE=_TRITON_DTYPES[dtype], num_warps=NUM_WARPS)


def _component_args(components: str) -> dict:
    return dict(USE_L="l" in components, USE_C="c" in components, USE_S="s" in components)


def ssim_forward(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], taps: torch.Tensor,
                 out_sizes: Sequence[tuple[int, int]], padding: str, components: str,
                 c1: float, c2: float, sqrt_eps: float, per_pixel: bool) -> list[torch.Tensor]:
    """Launch the forward kernel once for all levels.

    Returns per level the float32 SSIM map ``(N, C, H', W')`` when ``per_pixel``, else the
    per-channel mean ``(N, C)``, reduced from per-tile partial sums in a fixed order.
    """
    radius = (taps.numel() - 1) // 2
    tile_h = block_size(radius) - 2 * radius
    device = xs[0].device
    maps = ([torch.empty(x.shape[:2] + out, device=device, dtype=torch.float32)
             for x, out in zip(xs, out_sizes)] if per_pixel else None)
    table, counts, _ = _level_table(xs, ys, out_sizes, tile_h, maps=maps)
    partials = torch.empty(sum(counts), device=device, dtype=torch.float32)
    with _device_guard(device):
        ssim_forward_kernel[(sum(counts),)](
            table, taps, partials, c1, c2, sqrt_eps, STORE_MAP=per_pixel,
            **_layout_args(radius, padding, xs[0].dtype, len(xs)), **_component_args(components))
    if per_pixel:
        return maps
    return [part.view(*x.shape[:2], -1).sum(dim=-1) / (ho * wo)
            for x, part, (ho, wo) in zip(xs, partials.split(counts), out_sizes)]


def ssim_backward(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                  taps: torch.Tensor, out_sizes: Sequence[tuple[int, int]], padding: str,
                  components: str, c1: float, c2: float, sqrt_eps: float, per_pixel: bool,
                  need_x: bool, need_y: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Gradients of ``sum(grads[l] * ssim_l)`` w.r.t. the inputs that need them.

    ``grads[l]`` is float32 and contiguous: the map's gradient ``(N, C, H', W')`` when
    ``per_pixel``, else the gradient of the per-channel mean ``(N, C)``. Returns
    ``(dxs, dys)``, each empty when not needed; gradients are contiguous in the input dtype.
    Needs a float32 scratch of ``1 + 2 * (need_x + need_y)`` maps of the output size.
    """
    radius = (taps.numel() - 1) // 2
    tile_h = block_size(radius) - 2 * radius
    kinds = 1 + 2 * need_x + 2 * need_y
    sizes = [x.shape[0] * x.shape[1] * ho * wo for x, (ho, wo) in zip(xs, out_sizes)]
    offsets = [kinds * sum(sizes[:lvl]) for lvl in range(len(xs))]
    coef = torch.empty(kinds * sum(sizes), device=xs[0].device, dtype=torch.float32)
    dxs = [torch.empty(x.shape, device=x.device, dtype=x.dtype) for x in xs] if need_x else []
    dys = [torch.empty(y.shape, device=y.device, dtype=y.dtype) for y in ys] if need_y else []
    table, out_counts, in_programs = _level_table(
        xs, ys, out_sizes, tile_h, grads=grads, coef_offsets=offsets,
        dxs=dxs or None, dys=dys or None)
    layout = _layout_args(radius, padding, xs[0].dtype, len(xs))
    with _device_guard(xs[0].device):
        ssim_coef_kernel[(sum(out_counts),)](
            table, taps, coef, c1, c2, sqrt_eps, GRAD_PER_PIXEL=per_pixel,
            NEED_X=need_x, NEED_Y=need_y, **layout, **_component_args(components))
        ssim_grad_kernel[(in_programs,)](table, taps, coef, NEED_X=need_x, NEED_Y=need_y, **layout)
    return dxs, dys
