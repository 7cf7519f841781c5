"""Argument checks shared by the compat modules, with the peers' argument names in messages."""
from __future__ import annotations

from typing import Any

import torch


def check_tensor_pair(first: tuple[str, Any], second: tuple[str, Any], ndims: tuple[int, ...],
                      layout: str) -> None:
    """Check two named inputs: tensors, of one of ``ndims`` dimensions, of equal shape.

    Args:
        first, second: ``(argument name, value)`` pairs, e.g. ``("img1", img1)``.
        ndims: accepted numbers of dimensions.
        layout: the accepted shapes in words, quoted in the message (e.g. ``"(B, C, H, W)"``).
    """
    for name, value in (first, second):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dim() not in ndims:
            raise ValueError(f"{name} must have shape {layout}, got shape {tuple(value.shape)}")
    (name1, value1), (name2, value2) = first, second
    if value1.shape != value2.shape:
        raise ValueError(f"{name1} and {name2} must have the same shape, got "
                         f"{tuple(value1.shape)} and {tuple(value2.shape)}")


def check_min_side(name: str, value: torch.Tensor, minimum: int, why: str) -> None:
    """Raise ``ValueError`` when a spatial side (every dimension after the second) is below ``minimum``."""
    sides = tuple(value.shape[2:])
    if min(sides) < minimum:
        raise ValueError(f"{name} of spatial size {'x'.join(map(str, sides))} is too small: {why}")
