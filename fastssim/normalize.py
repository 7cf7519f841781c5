"""Min-max normalisation of feature maps to [0, 1] (the paper's psi)."""
from __future__ import annotations

import torch

from ._options import check_choice

NORMALIZE_SCOPES = ("level", "sample", "channel")

# Dimensions over which each scope takes its minimum and maximum.
REDUCED_DIMS = {"level": (0, 1, 2, 3), "sample": (1, 2, 3), "channel": (2, 3)}

# Smallest range a map is divided by. A map whose max - min is below it is near-constant
# (a dead channel, an all-zero level): dividing by its true range would turn rounding
# noise into the full [0, 1] span and give gradients of order 1/range (1e8 and more).
# FPN features span units to tens, far above it.
# Scaling by 1/RANGE_FLOOR instead maps a constant map to all zeros and bounds the
# gradient by 1/RANGE_FLOOR times SSIM's gradient with respect to the normalised map.
RANGE_FLOOR = 1e-2


def min_max_stats(x: torch.Tensor, scope: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Offset, scale and maximum of min-max normalisation: ``psi(x) = (x - low) * scale``.

    ``low`` and ``high`` are the minimum and maximum over the scope (one ``aminmax`` pass
    for the per-level scope), ``scale = 1 / max(high - low, RANGE_FLOOR)``; all float32
    (float64 for float64 input) of shape ``(1, 1, 1, 1)``, ``(N, 1, 1, 1)`` or ``(N, C, 1, 1)``
    for the scopes ``"level"``, ``"sample"`` and ``"channel"``, and differentiable (ties of
    the min and max share the gradient, as in :func:`torch.amax`). Every backend normalises
    with these numbers.
    """
    if scope == "level":
        low, high = (v.view(1, 1, 1, 1) for v in torch.aminmax(x))
    else:
        dims = REDUCED_DIMS[scope]
        low, high = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    low, high = low.to(compute), high.to(compute)
    return low, 1 / (high - low).clamp_min(RANGE_FLOOR), high


def min_max_normalize(x: torch.Tensor, scope: str = "level") -> torch.Tensor:
    r"""Map ``x`` linearly to [0, 1] by its minimum and maximum: :math:`(x - \min) / (\max - \min)`.

    Computed in float32 (float64 for float64 input) so that half-precision features keep
    their resolution; differentiable, with the exact gradient through the min and max
    (ties share it, as in :func:`torch.amax`).

    A near-constant map, whose range is below ``RANGE_FLOOR`` (0.01), is divided by
    ``RANGE_FLOOR`` instead of its range: a constant map becomes all zeros, and the
    gradient stays bounded (at most ``1 / RANGE_FLOOR`` times the gradient with respect to
    the normalised map) instead of growing as one over the range.

    Args:
        x: feature map of shape :math:`(N, C, H, W)`.
        scope: over which elements min and max are taken: ``"level"`` (the whole tensor,
            as the paper's per-scale normalisation), ``"sample"`` (per sample) or
            ``"channel"`` (per sample and channel).

    Returns:
        A tensor of the shape of ``x`` with values in [0, 1].

    Examples:
        >>> min_max_normalize(torch.tensor([[[[2.0, 4.0], [6.0, 10.0]]]]))
        tensor([[[[0.0000, 0.2500],
                  [0.5000, 1.0000]]]])
        >>> min_max_normalize(torch.full((1, 1, 2, 2), 3.0)).sum().item()
        0.0
    """
    check_choice("scope", scope, NORMALIZE_SCOPES)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got shape {tuple(x.shape)}")
    low, scale, _ = min_max_stats(x, scope)
    return (x.to(low.dtype) - low) * scale
