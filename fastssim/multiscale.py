"""Multi-scale SSIM (Wang, Simoncelli, Bovik 2003) as pytorch-msssim computes it."""
from __future__ import annotations

import numbers
from dataclasses import asdict
from typing import Sequence

import torch
import torch.nn.functional as F

from ._options import SSIMSettings, check_choice, check_pair
from .functional import reduce_ssim, ssim_levels
from .volumetric import ssim3d

# Wang et al. 2003, Table 1 (and pytorch-msssim's defaults): the weight of each scale, finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_MS_SSIM_REDUCTIONS = ("mean", "channel", "sample")


def ms_ssim(x: torch.Tensor, y: torch.Tensor, *, window_size: int = 11, sigma: float = 1.5,
            data_range: float = 1.0, k1: float = 0.01, k2: float = 0.03,
            weights: Sequence[float] = MS_SSIM_WEIGHTS, nonnegative: bool = True,
            reduction: str = "mean", backend: str = "auto") -> torch.Tensor:
    r"""Multi-scale structural similarity of two image (or volume) batches, per channel.

    .. math::
        \text{MS-SSIM} = \text{SSIM}_M^{w_M} \prod_{j=1}^{M-1} \text{cs}_j^{w_j}

    over :math:`M` = ``len(weights)`` scales: scale 1 is the input, each next one a 2x average
    pool of the previous (a side of odd size is zero-padded by one pixel on both ends first,
    as pytorch-msssim does). Every scale uses the Gaussian window with ``padding="valid"``;
    :math:`\text{cs}_j` is the mean contrast-structure term
    :math:`(2\sigma_{xy} + C_2) / (\sigma_x^2 + \sigma_y^2 + C_2)` of scale :math:`j`, and the
    coarsest scale contributes its full SSIM. All means are per sample and channel.

    On Triton (CUDA input) the contrast-structure scales of 4-D input go through one kernel
    launch and the last scale through a second, forward and backward; 5-D volumes use
    :func:`ssim3d` at every scale (its volume kernels on Triton).

    Args:
        x: first input, :math:`(N, C, H, W)` or :math:`(N, C, D, H, W)`, float64/32/16 or bfloat16.
        y: second input, same shape, dtype and device as ``x``.
        window_size: side of the Gaussian window (odd, >= 3).
        sigma: standard deviation of the Gaussian.
        data_range: dynamic range :math:`L` of the inputs (1.0 for [0, 1], 255 for 8-bit).
        k1, k2: the constants of :math:`C_1 = (k_1 L)^2`, :math:`C_2 = (k_2 L)^2`.
        weights: exponent of each scale, finest first; ``len(weights)`` is the number of scales.
        nonnegative: clamp each scale's per-channel value at 0 before the fractional power
            (pytorch-msssim always does). With ``False`` a negative scale gives NaN.
        reduction: ``"mean"`` (scalar), ``"channel"`` :math:`(N, C)` or ``"sample"`` :math:`(N,)`.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``, as in :func:`fastssim.ssim`.

    Returns:
        The MS-SSIM, float64 for float64 input and float32 otherwise.

    Raises:
        ValueError: when a spatial side is not larger than
            ``(window_size - 1) * 2 ** (len(weights) - 1)``: the coarsest scale would be
            smaller than the window.

    Examples:
        >>> x = torch.rand(1, 3, 48, 48)
        >>> ms_ssim(x, x, window_size=3).item()
        1.0
        >>> ms_ssim(x, torch.rand(1, 3, 48, 48), window_size=3, reduction="channel").shape
        torch.Size([1, 3])
    """
    settings = SSIMSettings(window_size, sigma, data_range, k1, k2, padding="valid")
    check_choice("reduction", reduction, _MS_SSIM_REDUCTIONS)
    scale_weights = _check_weights(weights)
    check_pair(x, y, settings, spatial_dims=3 if isinstance(x, torch.Tensor) and x.dim() == 5 else 2)
    sides = tuple(x.shape[2:])
    min_side = (window_size - 1) * 2 ** (len(scale_weights) - 1)
    if min(sides) <= min_side:
        raise ValueError(
            f"input of spatial size {'x'.join(map(str, sides))} is too small for MS-SSIM with "
            f"window_size={window_size} and {len(scale_weights)} scales: every side must be "
            f"> (window_size - 1) * 2**{len(scale_weights) - 1} = {min_side}; use a smaller "
            "window_size, fewer weights, or larger inputs")

    xs, ys = _pyramid(x, len(scale_weights)), _pyramid(y, len(scale_weights))
    cs_settings = SSIMSettings(**{**asdict(settings), "components": "cs"})
    scales = (_per_channel(xs[:-1], ys[:-1], cs_settings, backend) if len(xs) > 1 else [])
    scales += _per_channel(xs[-1:], ys[-1:], settings, backend)
    if nonnegative:
        scales = [torch.relu(value) for value in scales]
    stacked = torch.stack(scales)  # (scales, N, C)
    exponents = torch.tensor(scale_weights, dtype=stacked.dtype, device=stacked.device)
    return reduce_ssim(torch.prod(stacked ** exponents.view(-1, 1, 1), dim=0), reduction)


def _check_weights(weights: Sequence[float]) -> tuple[float, ...]:
    if isinstance(weights, torch.Tensor):
        weights = weights.tolist()
    if (not isinstance(weights, Sequence) or not weights
            or any(isinstance(w, bool) or not isinstance(w, numbers.Real) for w in weights)):
        raise TypeError(f"weights must be a non-empty sequence of real numbers, got {weights!r}")
    return tuple(float(w) for w in weights)


def _pyramid(image: torch.Tensor, num_scales: int) -> list[torch.Tensor]:
    """The input and its ``num_scales - 1`` successive 2x average pools (pytorch-msssim's padding)."""
    pool = F.avg_pool2d if image.dim() == 4 else F.avg_pool3d
    levels = [image]
    for _ in range(num_scales - 1):
        odd_sides = [side % 2 for side in levels[-1].shape[2:]]
        levels.append(pool(levels[-1], kernel_size=2, padding=odd_sides))
    return levels


def _per_channel(xs: list[torch.Tensor], ys: list[torch.Tensor], settings: SSIMSettings,
                 backend: str) -> list[torch.Tensor]:
    """Per-channel mean ``(N, C)`` of each scale; all 2-D scales in one call (one launch on Triton)."""
    if xs[0].dim() == 4:
        return ssim_levels(xs, ys, settings, per_pixel=False, backend=backend)
    return [ssim3d(x, y, **asdict(settings), reduction="channel", backend=backend)
            for x, y in zip(xs, ys)]
