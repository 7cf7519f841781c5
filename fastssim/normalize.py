"""Min-max normalisation of feature maps to [0, 1] (the paper's psi)."""
from __future__ import annotations

import torch

from ._options import check_choice

NORMALIZE_SCOPES = ("level", "sample", "channel")

_REDUCED_DIMS = {"level": (0, 1, 2, 3), "sample": (1, 2, 3), "channel": (2, 3)}


def min_max_normalize(x: torch.Tensor, scope: str = "level", eps: float = 1e-12) -> torch.Tensor:
    r"""Map ``x`` linearly to [0, 1] by its minimum and maximum: :math:`(x - \min) / (\max - \min)`.

    Computed in float32 (float64 for float64 input) so that half-precision features keep
    their resolution; differentiable, with the exact gradient through the min and max
    (ties share it, as in :func:`torch.amax`).

    Args:
        x: feature map of shape :math:`(N, C, H, W)`.
        scope: over which elements min and max are taken: ``"level"`` (the whole tensor,
            as the paper's per-scale normalisation), ``"sample"`` (per sample) or
            ``"channel"`` (per sample and channel).
        eps: lower bound on ``max - min``, so a constant map becomes 0, not NaN.

    Returns:
        A tensor of the shape of ``x`` with values in [0, 1].

    Examples:
        >>> min_max_normalize(torch.tensor([[[[2.0, 4.0], [6.0, 10.0]]]]))
        tensor([[[[0.0000, 0.2500],
                  [0.5000, 1.0000]]]])
    """
    check_choice("normalize scope", scope, NORMALIZE_SCOPES)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got shape {tuple(x.shape)}")
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    dims = _REDUCED_DIMS[scope]
    low = x.amin(dim=dims, keepdim=True)
    high = x.amax(dim=dims, keepdim=True)
    return (x - low) / (high - low).clamp_min(eps)
