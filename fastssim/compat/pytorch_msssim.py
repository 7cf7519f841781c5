"""Drop-in for ``pytorch_msssim``: ``ssim``, ``ms_ssim``, ``SSIM``, ``MS_SSIM``.

``from fastssim.compat.pytorch_msssim import ssim, ms_ssim, SSIM, MS_SSIM`` takes the same
arguments in the same order with the same defaults (``data_range=255``, valid padding, an
11-tap Gaussian of sigma 1.5, ``K=(0.01, 0.03)``) and returns the same numbers: per channel
means over ``(N, C, H, W)`` images or ``(N, C, D, H, W)`` volumes, computed by fastssim
(Triton on CUDA, for volumes with windows up to 15; the PyTorch reference elsewhere).

Differences from pytorch-msssim, all deliberate:

- Window precision: pytorch-msssim builds its Gaussian in float32 even for float64 input;
  fastssim builds it in float64. For float64 input the results differ by the float32 rounding
  of the taps (below 1e-7 on random test images; float32 input agrees to float32 rounding).
- Too-small input: where a spatial side is smaller than the window, pytorch-msssim skips the
  smoothing along that side with a warning; these functions raise ``ValueError`` instead.
- ``win``: only Gaussian windows are supported (fastssim recovers the sigma from the taps and
  raises ``ValueError`` for any other window).
- Bad input raises ``TypeError``/``ValueError`` naming the argument (pytorch-msssim asserts the
  MS-SSIM size rule; here it is a ``ValueError``).
- Every function takes a keyword-only ``backend`` (``"auto"``, ``"torch"``, ``"triton"``).
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ..functional import ssim as _ssim_2d
from ..multiscale import MS_SSIM_WEIGHTS, ms_ssim as _ms_ssim
from ..volumetric import ssim3d as _ssim_3d
from ._common import check_min_side, check_tensor_pair

__all__ = ["ssim", "ms_ssim", "SSIM", "MS_SSIM"]

_Constants = Union[tuple[float, float], list[float]]


def ssim(X: Tensor, Y: Tensor, data_range: float = 255, size_average: bool = True,
         win_size: int = 11, win_sigma: float = 1.5, win: Optional[Tensor] = None,
         K: _Constants = (0.01, 0.03), nonnegative_ssim: bool = False, *,
         backend: str = "auto") -> Tensor:
    r"""SSIM with pytorch-msssim's signature: per-channel means of the valid-padding SSIM map.

    Args:
        X, Y: images :math:`(N, C, H, W)` or volumes :math:`(N, C, D, H, W)`; spatial
            dimensions of size 1 are squeezed first, as pytorch-msssim does.
        data_range: dynamic range of the inputs (255 for 8-bit images, 1.0 for [0, 1]).
        size_average: a scalar mean when ``True``, else the per-sample mean :math:`(N,)`.
        win_size: Gaussian window side (odd, >= 3).
        win_sigma: Gaussian standard deviation.
        win: a 1-D Gaussian window as pytorch-msssim builds it (``(C, 1, ..., win_size)``);
            overrides ``win_size`` and ``win_sigma``.
        K: the constants ``(K1, K2)``.
        nonnegative_ssim: clamp each channel's SSIM at 0 (relu) before averaging.
        backend: fastssim's backend choice (not in pytorch-msssim).

    Returns:
        A scalar, or :math:`(N,)` with ``size_average=False``, in the dtype of ``X``.

    Examples:
        >>> X = torch.rand(2, 3, 32, 32) * 255
        >>> ssim(X, X).item()
        1.0
        >>> ssim(X, torch.rand(2, 3, 32, 32) * 255, size_average=False).shape
        torch.Size([2])
    """
    X, Y = _squeezed_pair(X, Y)
    win_size, win_sigma = _window(win, win_size, win_sigma)
    check_min_side("X", X, win_size, f"every side must be >= win_size={win_size} (pytorch-msssim "
                   "would skip the smoothing along a shorter side); use a smaller win_size")
    k1, k2 = _constants(K)
    ssim_fn = _ssim_2d if X.dim() == 4 else _ssim_3d
    per_channel = ssim_fn(X, Y, window_size=win_size, sigma=win_sigma, data_range=data_range,
                          k1=k1, k2=k2, padding="valid", reduction="channel", backend=backend)
    if nonnegative_ssim:
        per_channel = torch.relu(per_channel)
    return _average(per_channel, size_average).to(X.dtype)


def ms_ssim(X: Tensor, Y: Tensor, data_range: float = 255, size_average: bool = True,
            win_size: int = 11, win_sigma: float = 1.5, win: Optional[Tensor] = None,
            weights: Optional[Sequence[float]] = None, K: _Constants = (0.01, 0.03), *,
            backend: str = "auto") -> Tensor:
    r"""MS-SSIM with pytorch-msssim's signature (see :func:`fastssim.multiscale.ms_ssim`).

    Args:
        X, Y: images :math:`(N, C, H, W)` or volumes :math:`(N, C, D, H, W)` (size-1 spatial
            dimensions squeezed first). The smaller of the last two sides must be larger than
            ``(win_size - 1) * 16`` (pytorch-msssim's rule, whatever the number of weights);
            each side must also leave the coarsest scale at least ``win_size`` wide.
        data_range, size_average, win_size, win_sigma, win, K, backend: as in :func:`ssim`.
        weights: the exponent of each scale, finest first; default
            ``[0.0448, 0.2856, 0.3001, 0.2363, 0.1333]``.

    Returns:
        A scalar, or :math:`(N,)` with ``size_average=False``, in the dtype of ``X``.

    Examples:
        >>> X = torch.rand(1, 3, 40, 40)
        >>> ms_ssim(X, X, data_range=1.0, win_size=3).item()
        1.0
    """
    X, Y = _squeezed_pair(X, Y)
    win_size, win_sigma = _window(win, win_size, win_sigma)
    min_side = (win_size - 1) * 2 ** 4
    if min(X.shape[-2:]) <= min_side:
        raise ValueError(f"X of spatial size {'x'.join(map(str, X.shape[2:]))} is too small for "
                         f"ms_ssim: its smaller side must be > (win_size - 1) * 2**4 = {min_side} "
                         "(four 2x downsamplings); use a smaller win_size or larger images")
    k1, k2 = _constants(K)
    per_channel = _ms_ssim(X, Y, window_size=win_size, sigma=win_sigma, data_range=data_range,
                           k1=k1, k2=k2, weights=MS_SSIM_WEIGHTS if weights is None else weights,
                           reduction="channel", backend=backend)
    return _average(per_channel, size_average).to(X.dtype)


class _WindowModule(torch.nn.Module):
    """The settings pytorch-msssim's ``SSIM`` and ``MS_SSIM`` share, checked at construction."""

    def __init__(self, data_range: float, size_average: bool, win_size: int, win_sigma: float,
                 channel: int, spatial_dims: int, K: _Constants, backend: str) -> None:
        super().__init__()
        self.win_size, self.win_sigma = _window(None, win_size, win_sigma)
        self.channel, self.spatial_dims = _check_layout(channel, spatial_dims)
        self.data_range = data_range
        self.size_average = size_average
        self.K = K
        self.backend = backend

    def _inputs(self, X: Tensor, Y: Tensor) -> tuple[Tensor, Tensor]:
        """The squeezed inputs, checked against ``channel`` and ``spatial_dims``."""
        X, Y = _squeezed_pair(X, Y)
        if X.dim() - 2 != self.spatial_dims:
            raise ValueError(f"X has {X.dim() - 2} spatial dimensions (shape {tuple(X.shape)}) but "
                             f"the module was built with spatial_dims={self.spatial_dims}")
        if X.shape[1] != self.channel:
            raise ValueError(f"X has {X.shape[1]} channels but the module was built with "
                             f"channel={self.channel}; pass channel={X.shape[1]}")
        return X, Y

    def _settings(self) -> dict:
        return dict(data_range=self.data_range, size_average=self.size_average, win_size=self.win_size,
                    win_sigma=self.win_sigma, K=self.K, backend=self.backend)


class SSIM(_WindowModule):
    """Module form of :func:`ssim`, with pytorch-msssim's constructor.

    ``channel`` and ``spatial_dims`` shape pytorch-msssim's stored window; as there, inputs
    must have exactly ``channel`` channels and ``spatial_dims`` spatial dimensions (after
    size-1 spatial dimensions are squeezed); anything else raises ``ValueError`` (a
    convolution error in pytorch-msssim).

    Examples:
        >>> module = SSIM(data_range=1.0, channel=1)
        >>> X = torch.rand(2, 1, 16, 16)
        >>> module(X, X).item()
        1.0
    """

    def __init__(self, data_range: float = 255, size_average: bool = True, win_size: int = 11,
                 win_sigma: float = 1.5, channel: int = 3, spatial_dims: int = 2,
                 K: _Constants = (0.01, 0.03), nonnegative_ssim: bool = False, *,
                 backend: str = "auto") -> None:
        super().__init__(data_range, size_average, win_size, win_sigma, channel, spatial_dims, K, backend)
        self.nonnegative_ssim = nonnegative_ssim

    def forward(self, X: Tensor, Y: Tensor) -> Tensor:
        return ssim(*self._inputs(X, Y), nonnegative_ssim=self.nonnegative_ssim, **self._settings())


class MS_SSIM(_WindowModule):
    """Module form of :func:`ms_ssim`, with pytorch-msssim's constructor (see :class:`SSIM`).

    Examples:
        >>> module = MS_SSIM(data_range=1.0, win_size=3, channel=1)
        >>> X = torch.rand(1, 1, 40, 40)
        >>> module(X, X).item()
        1.0
    """

    def __init__(self, data_range: float = 255, size_average: bool = True, win_size: int = 11,
                 win_sigma: float = 1.5, channel: int = 3, spatial_dims: int = 2,
                 weights: Optional[Sequence[float]] = None, K: _Constants = (0.01, 0.03), *,
                 backend: str = "auto") -> None:
        super().__init__(data_range, size_average, win_size, win_sigma, channel, spatial_dims, K, backend)
        self.weights = weights

    def forward(self, X: Tensor, Y: Tensor) -> Tensor:
        return ms_ssim(*self._inputs(X, Y), weights=self.weights, **self._settings())


def _squeezed_pair(X: Tensor, Y: Tensor) -> tuple[Tensor, Tensor]:
    """pytorch-msssim's input rule: equal shapes, size-1 spatial dimensions dropped, then 4-D or 5-D."""
    check_tensor_pair(("X", X), ("Y", Y), ndims=tuple(range(3, 9)),
                      layout="(N, C, H, W) or (N, C, D, H, W)")
    for dim in range(X.dim() - 1, 1, -1):
        X, Y = X.squeeze(dim), Y.squeeze(dim)
    check_tensor_pair(("X", X), ("Y", Y), ndims=(4, 5),
                      layout="(N, C, H, W) or (N, C, D, H, W) after dropping size-1 spatial dimensions")
    return X, Y


def _window(win: Optional[Tensor], win_size: int, win_sigma: float) -> tuple[int, float]:
    """The Gaussian's ``(size, sigma)``: from ``win`` when given, else checked ``win_size``/``win_sigma``."""
    if win is None:
        if isinstance(win_size, bool) or not isinstance(win_size, numbers.Integral):
            raise TypeError(f"win_size must be an int, got {type(win_size).__name__}")
        if win_size < 3 or win_size % 2 == 0:
            raise ValueError(f"win_size must be odd and >= 3, got {win_size}")
        return int(win_size), win_sigma
    if not isinstance(win, Tensor) or not win.is_floating_point() or win.dim() < 2:
        raise TypeError("win must be a floating-point window tensor of shape (C, 1, ..., win_size) "
                        "as pytorch_msssim builds it")
    size = win.shape[-1]
    taps = win.detach().to("cpu", torch.float64).reshape(-1, size)
    if size < 3 or size % 2 == 0 or not torch.equal(taps, taps[:1].expand_as(taps)):
        raise ValueError(f"win must hold one odd-sized (>= 3) window for every channel, got shape "
                         f"{tuple(win.shape)}")
    taps, radius = taps[0], size // 2
    # A normalised Gaussian has taps[r + 1] / taps[r] = exp(-1 / (2 sigma^2)).
    ratio = (taps[radius + 1] / taps[radius]).item()
    if not 0 < ratio < 1:
        raise ValueError("win must be a 1-D Gaussian window (fastssim computes Gaussian windows only)")
    sigma = math.sqrt(-0.5 / math.log(ratio))
    offsets = torch.arange(size, dtype=torch.float64) - radius
    gaussian = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    if not torch.allclose(taps, gaussian / gaussian.sum(), rtol=1e-5, atol=1e-7):
        raise ValueError("win must be a normalised 1-D Gaussian window, as pytorch_msssim "
                         "builds it (fastssim computes Gaussian windows only)")
    return size, sigma


def _constants(K: _Constants) -> tuple[float, float]:
    if (not isinstance(K, (tuple, list)) or len(K) != 2
            or any(isinstance(k, bool) or not isinstance(k, numbers.Real) for k in K)):
        raise TypeError(f"K must be a pair of real numbers (K1, K2), got {K!r}")
    return float(K[0]), float(K[1])


def _average(per_channel: Tensor, size_average: bool) -> Tensor:
    return per_channel.mean() if size_average else per_channel.mean(1)


def _check_layout(channel: int, spatial_dims: int) -> tuple[int, int]:
    if isinstance(channel, bool) or not isinstance(channel, numbers.Integral) or channel < 1:
        raise ValueError(f"channel must be a positive int, got {channel!r}")
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(channel), int(spatial_dims)
