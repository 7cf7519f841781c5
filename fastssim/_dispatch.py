"""Choice between the Triton kernels and the PyTorch reference."""
from __future__ import annotations

import os
from typing import Optional

import torch

from ._options import BACKENDS, SSIMSettings, check_choice


def _triton_import_error() -> Optional[str]:
    """Why the Triton kernels cannot be used here, or ``None`` when they can.

    Imports the kernels themselves, not only ``triton``: whatever keeps them from
    importing must keep ``"triton"`` out of :func:`available_backends`.
    """
    try:
        from .kernels import ssim  # noqa: F401
    except Exception as exc:  # triton missing or a broken install
        return f"fastssim.kernels could not be imported ({type(exc).__name__}: {exc})"
    return None


# Decided once at import, so compiled graphs see a constant.
_TRITON_ERROR = _triton_import_error()


def interpreter_enabled() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available_backends() -> list[str]:
    """Backends usable in this process: always ``"torch"``, plus ``"triton"`` when it can run."""
    usable = _TRITON_ERROR is None and (torch.cuda.is_available() or interpreter_enabled())
    return ["torch", "triton"] if usable else ["torch"]


def resolve_backend(backend: str, x: torch.Tensor, settings: SSIMSettings) -> str:
    """Turn the user's ``backend`` into ``"torch"`` or ``"triton"`` for inputs like ``x``.

    ``"auto"`` picks Triton for CUDA tensors the kernels support (float32/16, bfloat16,
    windows up to their limit for maps, or for volumes when ``x`` is 5-D) when Triton
    imports, and the reference otherwise;
    ``"triton"`` raises ``RuntimeError`` with the reason when the kernels cannot run here.
    """
    check_choice("backend", backend, BACKENDS)
    if backend == "torch":
        return "torch"
    if backend == "auto":
        if x.device.type != "cuda" or _TRITON_ERROR is not None:
            return "torch"
        from .kernels.ssim import CAPABILITIES
        supported = (x.dtype in CAPABILITIES.dtypes and settings.padding in CAPABILITIES.paddings
                     and settings.radius <= CAPABILITIES.radius_limit(x.dim() - 2))
        return "triton" if supported else "torch"
    if _TRITON_ERROR is not None:
        raise RuntimeError(f"backend='triton' is unavailable: {_TRITON_ERROR}; use backend='torch' or 'auto'")
    if x.device.type != "cuda" and not interpreter_enabled():
        raise RuntimeError(
            f"backend='triton' needs CUDA tensors, got tensors on {x.device}; move them to a GPU, "
            "use backend='auto'/'torch', or set TRITON_INTERPRET=1 before importing fastssim "
            "to run the kernels (slowly) on the CPU")
    return "triton"
