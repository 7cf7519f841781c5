"""Drop-in for fused-ssim (rahul-goel/fused-ssim): ``fused_ssim`` and ``fused_ssim3d``.

fused-ssim's fixed settings: an 11-tap Gaussian of sigma 1.5, ``C1 = 0.01**2``,
``C2 = 0.03**2`` (data range 1), ``padding="same"`` with a zero border or ``"valid"``
(the same map cropped by 5 on every side), and the mean over every element. Reproduced:
only ``img1`` gets a gradient (``img2`` is treated as constant, as fused-ssim's backward
returns none for it), and ``train=False`` is inference only. Computed by fastssim: Triton
on CUDA for images and volumes, the PyTorch reference elsewhere.

Differences from fused-ssim, all deliberate:

- Any float dtype is accepted (fused-ssim reads float32 only); the result is float32
  (float64 for float64 input), as fused-ssim's float32.
- fused-ssim clamps the local variances at 0 and the SSIM map to [-1, 1] (with a zero
  gradient where it clamps); exactly they never leave those ranges, so this only differs
  where fused-ssim's float32 rounding pushes them out, e.g. under a large constant offset.
- ``train=False`` computes without recording a graph (the result does not require grad, so
  a backward through it raises PyTorch's usual error); fused-ssim skips its derivative maps
  and a backward through its result is invalid.
- ``"valid"`` on a side of 10 or less raises ``ValueError`` (fused-ssim returns NaN, the
  mean of an empty map); bad input raises ``TypeError``/``ValueError`` naming the argument
  (fused-ssim asserts on ``padding``).
- Both functions take a keyword-only ``backend`` (``"auto"``, ``"torch"``, ``"triton"``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..functional import ssim as _ssim_2d
from ..volumetric import ssim3d as _ssim_3d
from ._common import check_min_side, check_tensor_pair

__all__ = ["fused_ssim", "fused_ssim3d"]

_PADDINGS = {"same": "zeros", "valid": "valid"}
_WINDOW_SIZE = 11


def fused_ssim(img1: Tensor, img2: Tensor, padding: str = "same", train: bool = True, *,
               backend: str = "auto") -> Tensor:
    r"""Mean SSIM of two image batches with fused-ssim's settings; the gradient reaches ``img1`` only.

    Args:
        img1: the prediction, :math:`(B, C, H, W)`; the only input that gets a gradient.
        img2: the target, same shape (treated as a constant).
        padding: ``"same"`` (zero border, output map :math:`H \times W`) or ``"valid"``
            (no border, :math:`(H - 10) \times (W - 10)`).
        train: ``False`` for inference: no autograd graph is recorded.
        backend: fastssim's backend choice (not in fused-ssim).

    Returns:
        A scalar: the mean of the SSIM map over batch, channels and pixels.

    Examples:
        >>> gt_image = torch.rand(2, 3, 24, 32)
        >>> predicted_image = torch.nn.Parameter(torch.rand_like(gt_image))
        >>> fused_ssim(predicted_image, gt_image).shape
        torch.Size([])
        >>> fused_ssim(gt_image, gt_image, padding="valid", train=False).item()
        1.0
    """
    return _fused(img1, img2, padding, train, backend, volume=False)


def fused_ssim3d(img1: Tensor, img2: Tensor, padding: str = "same", train: bool = True, *,
                 backend: str = "auto") -> Tensor:
    r"""Mean SSIM of two volume batches :math:`(B, C, D, H, W)` with fused-ssim's settings.

    Arguments as :func:`fused_ssim`; the window and the padding act along all three axes.

    Examples:
        >>> gt = torch.rand(1, 1, 12, 12, 12)
        >>> fused_ssim3d(gt, gt).item()
        1.0
    """
    return _fused(img1, img2, padding, train, backend, volume=True)


def _fused(img1: Tensor, img2: Tensor, padding: str, train: bool, backend: str,
           volume: bool) -> Tensor:
    layout = "(B, C, D, H, W)" if volume else "(B, C, H, W)"
    check_tensor_pair(("img1", img1), ("img2", img2), ndims=(5 if volume else 4,), layout=layout)
    if not isinstance(padding, str) or padding not in _PADDINGS:
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    if not isinstance(train, bool):
        raise TypeError(f"train must be a bool, got {type(train).__name__}")
    if padding == "valid":
        check_min_side("img1", img1, _WINDOW_SIZE,
                       f"padding='valid' crops {_WINDOW_SIZE // 2} pixels from every side, so every "
                       f"side must be >= {_WINDOW_SIZE}; use padding='same'")
    ssim_fn = _ssim_3d if volume else _ssim_2d
    with torch.set_grad_enabled(train and torch.is_grad_enabled()):
        return ssim_fn(img1, img2.detach(), window_size=_WINDOW_SIZE, sigma=1.5, data_range=1.0,
                       k1=0.01, k2=0.03, padding=_PADDINGS[padding], reduction="mean",
                       backend=backend)
