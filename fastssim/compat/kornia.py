"""Drop-in for kornia's SSIM: ``kornia.metrics`` (``ssim``, ``ssim3d``, ``SSIM``, ``SSIM3D``) and
``kornia.losses`` (``ssim_loss``, ``ssim3d_loss``, ``SSIMLoss``, ``SSIM3DLoss``).

Same arguments, order and defaults (``window_size`` required, Gaussian sigma 1.5,
``max_val=1.0``, ``eps=1e-12``, ``padding="same"`` = reflect, ``reduction="mean"``), the same
output shapes and dtypes (the SSIM map, or the reduced loss, in the promoted input dtype;
integer images are read as float32), computed by fastssim: Triton on CUDA for images and
volumes (windows up to 15 for volumes), the PyTorch reference elsewhere.

Reproduced quirk: the losses clamp the per-pixel ``(1 - SSIM) / 2`` to [0, 1], as kornia does.

Differences from kornia, all deliberate:

- ``eps``: kornia adds it to the SSIM denominator; fastssim computes the exact ratio, i.e.
  kornia with ``eps=0.0`` (what kornia's docs recommend for matching reference
  implementations). The gap is the factor ``1 / (1 + eps / den)`` with
  ``den >= C1 C2 = 9e-8 max_val**4``: at most 1.1e-5 relative with the defaults, reached only
  on perfectly flat black images, and about 1e-10 on random test images. ``eps`` is checked
  (a non-negative real) and otherwise not used.
- ``max_val`` may be an int (kornia raises ``TypeError`` for ``1`` but accepts ``1.0``).
- Sizes are checked: ``"same"`` needs every side > ``window_size // 2`` and ``"valid"``
  every side >= ``window_size``; kornia does not check and fails inside its padding or
  returns an empty map. ``window_size`` must be odd and >= 3.
- Bad input raises ``TypeError``/``ValueError`` naming the argument (kornia raises its own
  ``BaseError`` for a bad ``padding`` and ``NotImplementedError`` for a bad ``reduction``).
- Every function and module takes a keyword-only ``backend`` (``"auto"``, ``"torch"``,
  ``"triton"``; ``"triton"`` refuses volumes with a window above 15).
"""
from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

from ..functional import ssim as _ssim_2d
from ..volumetric import ssim3d as _ssim_3d
from ._common import check_min_side, check_tensor_pair

__all__ = ["ssim", "ssim3d", "SSIM", "SSIM3D", "ssim_loss", "ssim3d_loss", "SSIMLoss", "SSIM3DLoss"]

_PADDINGS = {"same": "reflect", "valid": "valid"}
_REDUCTIONS = ("mean", "sum", "none")


def ssim(img1: Tensor, img2: Tensor, window_size: int, max_val: float = 1.0, eps: float = 1e-12,
         padding: str = "same", *, backend: str = "auto") -> Tensor:
    r"""SSIM map of two image batches, as ``kornia.metrics.ssim``.

    Args:
        img1: first image batch :math:`(B, C, H, W)`.
        img2: second image batch, same shape.
        window_size: side of the Gaussian window (sigma 1.5), odd, >= 3.
        max_val: dynamic range of the images.
        eps: kornia's denominator term; see the module notes (fastssim computes ``eps=0``).
        padding: ``"same"`` (reflect, output :math:`(B, C, H, W)`) or ``"valid"``
            (output :math:`(B, C, H - 2p, W - 2p)`, ``p = window_size // 2``); any case.
        backend: fastssim's backend choice (not in kornia).

    Returns:
        The SSIM map in the promoted dtype of ``img1`` and ``img2``.

    Examples:
        >>> input1 = torch.rand(1, 4, 5, 5)
        >>> input2 = torch.rand(1, 4, 5, 5)
        >>> ssim(input1, input2, 5).shape
        torch.Size([1, 4, 5, 5])
    """
    return _ssim_map(img1, img2, window_size, max_val, eps, padding, backend, volume=False)


def ssim3d(img1: Tensor, img2: Tensor, window_size: int, max_val: float = 1.0, eps: float = 1e-12,
           padding: str = "same", *, backend: str = "auto") -> Tensor:
    r"""SSIM map of two volume batches :math:`(B, C, D, H, W)`, as ``kornia.metrics.ssim3d``.

    Arguments as :func:`ssim`; the window and the padding act along depth, height and width.

    Examples:
        >>> input1 = torch.rand(1, 4, 5, 5, 5)
        >>> input2 = torch.rand(1, 4, 5, 5, 5)
        >>> ssim3d(input1, input2, 5).shape
        torch.Size([1, 4, 5, 5, 5])
    """
    return _ssim_map(img1, img2, window_size, max_val, eps, padding, backend, volume=True)


def ssim_loss(img1: Tensor, img2: Tensor, window_size: int, max_val: float = 1.0,
              eps: float = 1e-12, reduction: str = "mean", padding: str = "same", *,
              backend: str = "auto") -> Tensor:
    r"""``clamp((1 - SSIM) / 2, 0, 1)`` per pixel, reduced; as ``kornia.losses.ssim_loss``.

    Args:
        img1, img2, window_size, max_val, eps, padding, backend: as in :func:`ssim`.
        reduction: ``"mean"`` (scalar), ``"sum"`` (scalar) or ``"none"`` (the loss map).

    Examples:
        >>> input1 = torch.rand(1, 4, 5, 5)
        >>> ssim_loss(input1, input1, 5).item()
        0.0
    """
    _check_reduction(reduction)
    return _loss(ssim(img1, img2, window_size, max_val, eps, padding, backend=backend), reduction)


def ssim3d_loss(img1: Tensor, img2: Tensor, window_size: int, max_val: float = 1.0,
                eps: float = 1e-12, reduction: str = "mean", padding: str = "same", *,
                backend: str = "auto") -> Tensor:
    r"""The loss of :func:`ssim_loss` over volumes :math:`(B, C, D, H, W)`; as ``kornia.losses.ssim3d_loss``.

    Examples:
        >>> input1 = torch.rand(1, 4, 5, 5, 5)
        >>> ssim3d_loss(input1, input1, 5).item()
        0.0
    """
    _check_reduction(reduction)
    return _loss(ssim3d(img1, img2, window_size, max_val, eps, padding, backend=backend), reduction)


class SSIM(nn.Module):
    """Module form of :func:`ssim` (``kornia.metrics.SSIM``).

    Examples:
        >>> SSIM(5)(torch.rand(1, 4, 5, 5), torch.rand(1, 4, 5, 5)).shape
        torch.Size([1, 4, 5, 5])
    """

    def __init__(self, window_size: int, max_val: float = 1.0, eps: float = 1e-12,
                 padding: str = "same", *, backend: str = "auto") -> None:
        super().__init__()
        self.window_size, self.max_val, self.eps, self.padding = window_size, max_val, eps, padding
        self.backend = backend

    def forward(self, img1: Tensor, img2: Tensor) -> Tensor:
        return ssim(img1, img2, self.window_size, self.max_val, self.eps, self.padding,
                    backend=self.backend)


class SSIM3D(SSIM):
    """Module form of :func:`ssim3d` (``kornia.metrics.SSIM3D``)."""

    def forward(self, img1: Tensor, img2: Tensor) -> Tensor:
        return ssim3d(img1, img2, self.window_size, self.max_val, self.eps, self.padding,
                      backend=self.backend)


class SSIMLoss(nn.Module):
    """Module form of :func:`ssim_loss` (``kornia.losses.SSIMLoss``).

    Examples:
        >>> criterion = SSIMLoss(5)
        >>> criterion(torch.rand(1, 4, 5, 5), torch.rand(1, 4, 5, 5)).shape
        torch.Size([])
    """

    def __init__(self, window_size: int, max_val: float = 1.0, eps: float = 1e-12,
                 reduction: str = "mean", padding: str = "same", *, backend: str = "auto") -> None:
        super().__init__()
        self.window_size, self.max_val, self.eps = window_size, max_val, eps
        self.reduction, self.padding, self.backend = reduction, padding, backend

    def forward(self, img1: Tensor, img2: Tensor) -> Tensor:
        return ssim_loss(img1, img2, self.window_size, self.max_val, self.eps, self.reduction,
                         self.padding, backend=self.backend)


class SSIM3DLoss(SSIMLoss):
    """Module form of :func:`ssim3d_loss` (``kornia.losses.SSIM3DLoss``)."""

    def forward(self, img1: Tensor, img2: Tensor) -> Tensor:
        return ssim3d_loss(img1, img2, self.window_size, self.max_val, self.eps, self.reduction,
                           self.padding, backend=self.backend)


def _ssim_map(img1: Tensor, img2: Tensor, window_size: int, max_val: float, eps: float,
              padding: str, backend: str, volume: bool) -> Tensor:
    layout = "(B, C, D, H, W)" if volume else "(B, C, H, W)"
    check_tensor_pair(("img1", img1), ("img2", img2), ndims=(5 if volume else 4,), layout=layout)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative real number, got {eps!r}")
    mode = str(padding).lower()
    if mode not in _PADDINGS:
        raise ValueError(f"padding must be 'same' or 'valid' (any case), got {padding!r}")
    if isinstance(window_size, bool) or not isinstance(window_size, numbers.Integral):
        raise TypeError(f"window_size must be an int, got {type(window_size).__name__}")
    if window_size < 3 or window_size % 2 == 0:
        raise ValueError(f"window_size must be odd and >= 3, got {window_size}")
    if mode == "same":
        check_min_side("img1", img1, window_size // 2 + 1,
                       f"padding='same' reflects the border, so every side must be > "
                       f"window_size // 2 = {window_size // 2}; use padding='valid' on larger "
                       "images or a smaller window_size")
    else:
        check_min_side("img1", img1, window_size,
                       f"padding='valid' needs every side >= window_size={window_size}")
    # kornia reads integer images as float32 and computes a mixed pair in the promoted dtype.
    img1, img2 = (img if img.is_floating_point() else img.float() for img in (img1, img2))
    output_dtype = torch.promote_types(img1.dtype, img2.dtype)
    ssim_fn = _ssim_3d if volume else _ssim_2d
    ssim_map = ssim_fn(img1.to(output_dtype), img2.to(output_dtype), window_size=window_size,
                       sigma=1.5, data_range=max_val, padding=_PADDINGS[mode], reduction="none",
                       backend=backend)
    return ssim_map.to(output_dtype)


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none'; got {reduction!r}")


def _loss(ssim_map: Tensor, reduction: str) -> Tensor:
    loss = torch.clamp((1.0 - ssim_map) / 2, min=0, max=1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
