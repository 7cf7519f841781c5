"""The implementations under test, each behind one loss signature.

Every implementation is built into a :data:`LossFn` ``loss(xs, ys, train)``
that takes the list of student levels ``xs`` and teacher levels ``ys`` and
returns the scalar distillation loss, the sum over levels of the mean of
``(1 - SSIM) / 2`` (the paper's L_feat without normalisation). ``train`` is
False for forward-only timing, so libraries that can skip their backward
bookkeeping (fused-ssim's ``train`` flag) do so.

fastssim takes the whole level list in one call (``SSIMDistillLoss`` with
``normalize=None`` so only SSIM is timed, and as ``*_level`` with the paper's
default per-level min-max normalisation, the loss users actually run); the peers
have no multi-level entry point and are called once per level, as a user of
theirs would. All use an
11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03 and data range 1,
each with its own (closest) padding, listed in :data:`IMPLS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

LossFn = Callable[[Sequence[Tensor], Sequence[Tensor], bool], Tensor]
LevelLoss = Callable[[Tensor, Tensor, bool], Tensor]

WINDOW_SIZE = 11
SIGMA = 1.5


class UnavailableError(Exception):
    """An implementation cannot run here; the message says why."""


def _per_level(level_loss: LevelLoss) -> LossFn:
    """Sum a single-map loss over the levels, as a peer's user would write it."""

    def loss(xs: Sequence[Tensor], ys: Sequence[Tensor], train: bool) -> Tensor:
        total = level_loss(xs[0], ys[0], train)
        for x, y in zip(xs[1:], ys[1:]):
            total = total + level_loss(x, y, train)
        return total

    return loss


def _fastssim(backend: str, normalize: str | None = None) -> LossFn:
    """fastssim's loss; with ``normalize`` every case (single maps too) runs ``SSIMDistillLoss``."""
    import fastssim

    backends = fastssim.available_backends()
    if backend not in backends:
        raise UnavailableError(f"fastssim.available_backends() is {backends}")
    distill = fastssim.SSIMDistillLoss(
        window_size=WINDOW_SIZE, sigma=SIGMA, padding="reflect", normalize=normalize, backend=backend
    )

    def loss(xs: Sequence[Tensor], ys: Sequence[Tensor], train: bool) -> Tensor:
        if len(xs) > 1 or normalize is not None:
            return distill(list(xs), list(ys))
        # halve=True with reflect padding is kornia's ssim_loss, the paper's L_ssim.
        return fastssim.ssim_loss(
            xs[0],
            ys[0],
            halve=True,
            window_size=WINDOW_SIZE,
            sigma=SIGMA,
            padding="reflect",
            backend=backend,
        )

    return loss


def _pytorch_msssim() -> LossFn:
    from pytorch_msssim import ssim

    def level(x: Tensor, y: Tensor, train: bool) -> Tensor:
        value = ssim(x, y, data_range=1.0, size_average=True, win_size=WINDOW_SIZE, win_sigma=SIGMA)
        return (1 - value) / 2

    return _per_level(level)


def _kornia() -> LossFn:
    from kornia.losses import ssim_loss

    def level(x: Tensor, y: Tensor, train: bool) -> Tensor:
        # Already (1 - SSIM) / 2, clamped to [0, 1]: the loss the paper used.
        return ssim_loss(x, y, window_size=WINDOW_SIZE, max_val=1.0)

    return _per_level(level)


def _torchmetrics() -> LossFn:
    from torchmetrics.functional import structural_similarity_index_measure as ssim

    def level(x: Tensor, y: Tensor, train: bool) -> Tensor:
        # data_range must be given: torchmetrics otherwise infers it from the data.
        return (1 - ssim(x, y, data_range=1.0, kernel_size=WINDOW_SIZE, sigma=SIGMA)) / 2

    return _per_level(level)


def _fused_ssim_api(module: str) -> LossFn:
    """fused-ssim and its packaged fork fussim share ``fused_ssim(img1, img2, padding, train)``.

    Their window (11, sigma 1.5) and constants (data range 1) are built in;
    ``padding="same"`` is zero padding. Gradients flow to ``img1`` only, which
    is the student here.
    """
    fused_ssim = importlib.import_module(module).fused_ssim

    def level(x: Tensor, y: Tensor, train: bool) -> Tensor:
        return (1 - fused_ssim(x, y, padding="same", train=train)) / 2

    return _per_level(level)


@dataclass(frozen=True)
class Impl:
    """One implementation: how to build it and which settings it runs with."""

    name: str
    settings: str
    cuda_only: bool
    build: Callable[[], LossFn]


IMPLS: dict[str, Impl] = {
    impl.name: impl
    for impl in [
        Impl(
            "fastssim_triton",
            "fastssim.ssim_loss, backend='triton', reflect padding; FPN: one SSIMDistillLoss call",
            True,
            lambda: _fastssim("triton"),
        ),
        Impl(
            "fastssim_torch",
            "fastssim.ssim_loss, backend='torch' (the reference), reflect padding; "
            "FPN: one SSIMDistillLoss call",
            False,
            lambda: _fastssim("torch"),
        ),
        Impl(
            "fastssim_triton_level",
            "SSIMDistillLoss(normalize='level'), backend='triton': the paper's default loss, "
            "min-max normalisation inside the kernels",
            True,
            lambda: _fastssim("triton", "level"),
        ),
        Impl(
            "fastssim_torch_level",
            "SSIMDistillLoss(normalize='level'), backend='torch' (min_max_normalize, then the reference)",
            False,
            lambda: _fastssim("torch", "level"),
        ),
        Impl(
            "pytorch_msssim",
            "pytorch_msssim.ssim, valid padding, per level",
            False,
            _pytorch_msssim,
        ),
        Impl("kornia", "kornia.losses.ssim_loss, reflect padding, per level", False, _kornia),
        Impl(
            "torchmetrics",
            "torchmetrics structural_similarity_index_measure, valid output, per level",
            False,
            _torchmetrics,
        ),
        Impl(
            "fused_ssim",
            "fused_ssim.fused_ssim, zero padding, per level",
            True,
            lambda: _fused_ssim_api("fused_ssim"),
        ),
        Impl(
            "fussim",
            "fussim.fused_ssim, zero padding, per level",
            True,
            lambda: _fused_ssim_api("fussim"),
        ),
    ]
}


def prepare(impl: Impl, device: torch.device) -> tuple[LossFn | None, str]:
    """Build ``impl`` for ``device``.

    Returns:
        ``(loss_fn, "ok")``, or ``(None, "unavailable: <reason>")`` when it
        cannot run here (no CUDA, not installed, failed import). Any exception
        is caught: one missing peer must not stop the suite.
    """
    if impl.cuda_only and device.type != "cuda":
        return None, f"unavailable: needs CUDA (device is {device.type})"
    try:
        return impl.build(), "ok"
    except Exception as exc:  # any import or setup failure is a result to record
        return None, f"unavailable: {describe_error(exc)}"


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """One line naming the exception type and the first line of its message."""
    if isinstance(exc, UnavailableError):
        return str(exc)
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text[:limit]
