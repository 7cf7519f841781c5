"""Functional SSIM API: ``ssim`` and ``ssim_loss``."""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import torch

from ._dispatch import resolve_backend
from ._options import REDUCTIONS, SSIMSettings, check_bool, check_choice, check_pair
from . import reference
from .normalize import min_max_normalize


def ssim(x: torch.Tensor, y: torch.Tensor, *, window_size: int = 11, sigma: float = 1.5,
         data_range: float = 1.0, k1: float = 0.01, k2: float = 0.03, padding: str = "valid",
         components: str = "lcs", reduction: str = "mean", backend: str = "auto") -> torch.Tensor:
    r"""Gaussian-windowed structural similarity of two image or feature batches, per channel.

    .. math::
        \text{SSIM}(x, y) = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
        {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},
        \quad C_1 = (k_1 L)^2,\ C_2 = (k_2 L)^2

    with local statistics from an isotropic Gaussian window, computed for each channel.

    Args:
        x: first input of shape :math:`(N, C, H, W)`, float64/32/16 or bfloat16.
        y: second input, same shape, dtype and device as ``x``.
        window_size: side of the Gaussian window (odd, >= 3).
        sigma: standard deviation of the Gaussian.
        data_range: dynamic range :math:`L` of the inputs (1.0 for [0, 1], 255 for 8-bit).
        k1: luminance constant :math:`k_1`.
        k2: contrast/structure constant :math:`k_2`.
        padding: ``"valid"`` (no padding, output :math:`(H-k+1) \times (W-k+1)`; as
            pytorch-msssim and scikit-image), ``"reflect"`` (same size, mirrored border; as
            kornia, torchmetrics and the paper) or ``"zeros"`` (same size, zero border; as fused-ssim).
        components: which SSIM factors to multiply: a subset of ``"lcs"`` (luminance,
            contrast, structure); ``"lcs"`` is the standard SSIM.
        reduction: ``"mean"`` (scalar), ``"channel"`` (per sample and channel, :math:`(N, C)`),
            ``"sample"`` (per sample, :math:`(N,)`) or ``"none"`` (the SSIM map).
        backend: ``"auto"`` (Triton kernels for CUDA tensors, the reference elsewhere),
            ``"torch"`` (the PyTorch reference) or ``"triton"``.

    Returns:
        The SSIM, float64 for float64 input and float32 otherwise.

    Shape:
        - ``reduction="none"``: :math:`(N, C, H', W')` with :math:`H' \times W'` the input size,
          or :math:`(H-k+1) \times (W-k+1)` for ``padding="valid"``.

    Examples:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> ssim(x, x).item()
        1.0
        >>> ssim(x, torch.rand(2, 3, 16, 16), padding="reflect", reduction="channel").shape
        torch.Size([2, 3])
    """
    settings = SSIMSettings(window_size, sigma, data_range, k1, k2, padding, components)
    check_choice("reduction", reduction, REDUCTIONS)
    check_pair(x, y, settings)
    return reduce_ssim(ssim_levels([x], [y], settings, per_pixel=reduction == "none",
                                   backend=backend)[0], reduction)


def ssim_loss(x: torch.Tensor, y: torch.Tensor, *, halve: bool = False, **kwargs) -> torch.Tensor:
    r"""SSIM loss :math:`1 - \text{SSIM}`, or :math:`(1 - \text{SSIM}) / 2` with ``halve=True``.

    ``halve=True`` with ``padding="reflect"`` is kornia's ``ssim_loss`` (whose values lie in
    [0, 1] and are clamped there) and the paper's :math:`L_{ssim}`. ``kwargs`` are those of
    :func:`ssim` (``reduction`` applies to the loss).

    Examples:
        >>> x = torch.rand(1, 1, 12, 12)
        >>> ssim_loss(x, x, halve=True, padding="reflect").item()
        0.0
    """
    check_bool("halve", halve)
    value = ssim(x, y, **kwargs)
    # 0.5 - 0.5 SSIM: one operation, bit for bit (1 - SSIM) / 2 (checked on 2e6 float32 and
    # float64 values in [-2, 2] and the infinities).
    return torch.rsub(value, 0.5, alpha=0.5).clamp(0, 1) if halve else 1 - value


def ssim_levels(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], settings: SSIMSettings,
                per_pixel: bool, backend: str, normalize: Optional[str] = None) -> list[torch.Tensor]:
    """SSIM of several validated pairs (e.g. FPN levels) at once.

    ``normalize`` (``None``, ``"level"``, ``"sample"`` or ``"channel"``) min-max normalises
    each input first (:func:`fastssim.min_max_normalize`); the Triton kernels do it at load
    time, without a normalised copy. Returns, per pair, the SSIM map when ``per_pixel`` and
    the per-channel mean SSIM of shape ``(N, C)`` otherwise. On Triton all pairs go through
    one kernel launch.

    Levels of different dtypes are first promoted to their common dtype, and the backend
    is decided over all levels (``"auto"`` runs the reference for all of them when any
    one needs it), so every backend sees the same, consistent list.
    """
    common = functools.reduce(torch.promote_types, [t.dtype for t in (*xs, *ys)])
    xs, ys = [x.to(common) for x in xs], [y.to(common) for y in ys]
    if all(resolve_backend(backend, x, settings) == "triton" for x in xs):
        from ._triton_function import ssim_levels_triton
        return ssim_levels_triton(xs, ys, settings, per_pixel, normalize)
    if normalize is not None:
        xs = [min_max_normalize(x, normalize) for x in xs]
        ys = [min_max_normalize(y, normalize) for y in ys]
    maps = [reference.ssim_map(x, y, settings) for x, y in zip(xs, ys)]
    return maps if per_pixel else [m.mean(dim=(-2, -1)) for m in maps]


def reduce_ssim(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a per-channel ``(N, C)`` SSIM (or the ``(N, C, H', W')`` map for ``"none"``)."""
    if reduction in ("none", "channel"):
        return values
    if reduction == "sample":
        return values.mean(dim=1)
    return values.mean()
