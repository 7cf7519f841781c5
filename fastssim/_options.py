"""Validated settings shared by every backend, and the input checks.

Everything a user passes is checked here, once, before any backend runs, so that a
bad argument gets a ``TypeError``/``ValueError`` that names it instead of failing
deep inside a convolution or a kernel.
"""
from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass
from typing import Any, Optional

import torch

PADDINGS = ("valid", "reflect", "zeros")
REDUCTIONS = ("mean", "channel", "sample", "none")
BACKENDS = ("auto", "torch", "triton")
_COMPONENT_LETTERS = "lcs"
_FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
# Every backend computes the statistics in float32 for all but float64 input, so the
# constants and the squares of inputs spanning data_range must be normal float32 numbers:
# outside that range SSIM becomes 0/0 or inf/inf (NaN).
_FLOAT32 = torch.finfo(torch.float32)


@dataclass(frozen=True)
class SSIMSettings:
    """The numeric settings of one SSIM evaluation (hashable, backend independent).

    Attributes:
        window_size: side of the square Gaussian window (odd).
        sigma: standard deviation of the Gaussian.
        data_range: dynamic range L of the inputs; ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``.
        k1: luminance stabiliser constant.
        k2: contrast/structure stabiliser constant.
        padding: ``"valid"``, ``"reflect"`` or ``"zeros"``.
        components: letters of the SSIM factors used, a subset of ``"lcs"`` in that order.
    """

    window_size: int = 11
    sigma: float = 1.5
    data_range: float = 1.0
    k1: float = 0.01
    k2: float = 0.03
    padding: str = "valid"
    components: str = "lcs"

    def __post_init__(self) -> None:
        _check_int("window_size", self.window_size, minimum=3)
        if self.window_size % 2 == 0:
            raise ValueError(f"window_size must be odd, got {self.window_size}")
        _check_positive_real("sigma", self.sigma)
        _check_positive_real("data_range", self.data_range)
        _check_positive_real("k1", self.k1)
        _check_positive_real("k2", self.k2)
        check_choice("padding", self.padding, PADDINGS)
        self._check_numeric_range()
        if (not isinstance(self.components, str) or not self.components
                or any(ch not in _COMPONENT_LETTERS for ch in self.components)
                or len(set(self.components)) != len(self.components)):
            raise ValueError(
                "components must be a non-empty string of distinct letters from 'lcs' "
                f"(l=luminance, c=contrast, s=structure), got {self.components!r}")
        # Canonical order so equal settings compare and hash equal.
        object.__setattr__(self, "components",
                           "".join(ch for ch in _COMPONENT_LETTERS if ch in self.components))

    def _check_numeric_range(self) -> None:
        """Refuse settings whose window or constants are NaN, zero or infinite in float32."""
        # exp(-d^2 / (2 sigma^2)) is NaN only at d = 0 when 2 sigma^2 underflows to 0 (0 / 0);
        # a subnormal or infinite 2 sigma^2 gives a finite window. Plain floats, no tensors:
        # torch.compile traces this check.
        if not 2.0 * self.sigma * self.sigma > 0:
            raise ValueError(f"sigma={self.sigma} is too small: 2*sigma**2 underflows to 0 and the "
                             "Gaussian window is NaN; use a sigma of 1e-100 or more (about 0.3 "
                             "already puts almost all weight on the centre pixel)")
        bounds = f"[{_FLOAT32.tiny:.3g}, {_FLOAT32.max:.3g}]"
        for name, k, constant in (("C1", "k1", self.c1), ("C2", "k2", self.c2)):
            if not _FLOAT32.tiny <= constant <= _FLOAT32.max:
                raise ValueError(
                    f"data_range={self.data_range} with {k}={getattr(self, k)} gives {name} = "
                    f"({k}*data_range)**2 = {constant:.3g}, outside float32's normal range {bounds}, "
                    "so SSIM would be NaN; keep k1, k2 near 0.01, 0.03 and rescale the inputs to a "
                    "range near 1 (e.g. [0, 1] with data_range=1, or 8-bit values with data_range=255)")
        if self.data_range * self.data_range > _FLOAT32.max:
            raise ValueError(
                f"data_range={self.data_range} is too large: the squares of inputs spanning it (the "
                f"variances) overflow float32 (max {_FLOAT32.max:.3g}), so SSIM would be NaN; rescale "
                "the inputs to a range near 1 and set data_range to match")

    @property
    def radius(self) -> int:
        return self.window_size // 2

    @property
    def c1(self) -> float:
        # Product, not ** 2: an out-of-range value becomes inf (refused above), not OverflowError.
        return (self.k1 * self.data_range) * (self.k1 * self.data_range)

    @property
    def c2(self) -> float:
        return (self.k2 * self.data_range) * (self.k2 * self.data_range)

    @property
    def sqrt_eps(self) -> float:
        """``1e-6 C2``, added to a variance before a square root (contrast or structure alone).

        Keeps the gradient finite on flat windows, at a cost in value that depends on the
        windows (measured in float64 over variances from 1e-12 C2 to 1e6 C2): two flat
        windows give a contrast factor of ``1 + 2e-6`` (``components="c"`` on equal
        constant images: 1.0000020) and a structure factor of ``1 - 2e-6``; the contrast
        factor moves by at most ``sqrt(1e-6) = 1e-3`` (a flat window beside one of variance
        C2); the structure factor of a flat window beside a textured one of variance ``v``
        moves by about ``sqrt(1e-6 v / C2)``, up to 0.67 at ``v = 1e6 C2``. The standard
        ``"lcs"`` and ``"cs"`` have no square root and are exact.
        """
        return 1e-6 * self.c2

    def output_size(self, *sides: int) -> tuple[int, ...]:
        """Spatial size of the SSIM map for an input of spatial size ``sides`` (``H, W`` or ``D, H, W``)."""
        if self.padding == "valid":
            return tuple(side - self.window_size + 1 for side in sides)
        return tuple(sides)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_positive_real(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {value}")


def check_bool(name: str, value: object) -> None:
    """Refuse anything but ``True``/``False`` (a string such as ``"no"`` would count as true)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


# Layout names of the inputs, by number of spatial dimensions.
_LAYOUTS = {2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


def _check_tensor(arg: str, t: object, where: str, spatial_dims: int) -> None:
    """One input: a float NCHW (or NCDHW) tensor with data; the message says the usual fix."""
    if not isinstance(t, torch.Tensor):
        hint = (f"; convert it with torch.from_numpy({arg})" if type(t).__module__ == "numpy" else "")
        raise TypeError(f"{arg}{where} must be a torch.Tensor, got {type(t).__name__}{hint}")
    if t.dtype not in _FLOAT_DTYPES:
        hint = ""
        if not (t.is_floating_point() or t.is_complex()):
            scale = "data_range=255" if t.dtype == torch.uint8 else "data_range set to their range"
            hint = f"; for integer images use {arg}.float() with {scale}"
        raise TypeError(f"{arg}{where} must be float64, float32, float16 or bfloat16, got {t.dtype}{hint}")
    if t.dim() != 2 + spatial_dims:
        single = "(C, H, W) image" if spatial_dims == 2 else "(C, D, H, W) volume"
        hint = f"; for a single {single} use {arg}.unsqueeze(0)" if t.dim() == 1 + spatial_dims else ""
        raise ValueError(f"{arg}{where} must have shape {_LAYOUTS[spatial_dims]}, got a {t.dim()}-D tensor "
                         f"of shape {tuple(t.shape)}{hint}")
    if t.numel() == 0:
        raise ValueError(f"{arg}{where} is empty (shape {tuple(t.shape)})")
    if t.device.type == "meta":
        raise ValueError(f"{arg}{where} is a meta tensor, which holds no values to compare; "
                         "pass tensors on a real device (cpu or cuda)")


def check_pair(x: Any, y: Any, settings: SSIMSettings, name: Optional[str] = None,
               spatial_dims: int = 2) -> None:
    """Check that ``x`` and ``y`` are a valid pair of float maps (or volumes) for ``settings``.

    Args:
        x, y: the two inputs, ``(N, C, H, W)``, or ``(N, C, D, H, W)`` with ``spatial_dims=3``.
        settings: the SSIM settings (window and padding decide the minimum size).
        name: optional level name, quoted in messages (e.g. an FPN level ``'pool'``).
        spatial_dims: 2 for images and feature maps, 3 for volumes.
    """
    where = f" (level {name!r})" if name is not None else ""
    for arg, t in (("x", x), ("y", y)):
        _check_tensor(arg, t, where, spatial_dims)
    if x.shape != y.shape:
        raise ValueError(f"x and y{where} must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"x and y{where} must be on the same device, got {x.device} and {y.device}")
    if x.dtype != y.dtype:
        raise TypeError(f"x and y{where} must have the same dtype, got {x.dtype} and {y.dtype}")
    sides = tuple(x.shape[2:])
    size = "x".join(map(str, sides))
    k, r = settings.window_size, settings.radius
    if settings.padding == "valid" and min(sides) < k:
        raise ValueError(
            f"input{where} of spatial size {size} is smaller than window_size={k} "
            "with padding='valid'; use padding='zeros' or 'reflect', a smaller window_size, or larger inputs")
    if settings.padding == "reflect" and min(sides) <= r:
        raise ValueError(
            f"input{where} of spatial size {size} is too small for window_size={k} with "
            f"padding='reflect' (each side must be > {r}); use padding='zeros', a smaller "
            "window_size, or larger inputs")


def result_dtype(dtype: torch.dtype) -> torch.dtype:
    """SSIM values and reductions are float64 for float64 input and float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def cached_tensors(build):
    """``functools.lru_cache`` for functions that build tensors, which it builds outside
    ``torch.inference_mode``: a cached inference tensor could never be saved for backward
    (a later double backward failed with "Inference tensors cannot be saved for backward")."""
    # ``functools.wraps`` also copies a ``torch.compiler.assume_constant_result`` mark from
    # ``build``, so torch.compile still treats the cached call as a constant.
    @functools.lru_cache(maxsize=64)
    @functools.wraps(build)
    def cached(*args):
        with torch.inference_mode(False):
            return build(*args)
    return cached


@cached_tensors
def _gaussian_taps(window_size: int, sigma: float) -> torch.Tensor:
    """Normalised float64 taps on the CPU (cached: settings are built on every call)."""
    coords = torch.arange(window_size, dtype=torch.float64) - window_size // 2
    # sigma * sigma, not sigma ** 2: a huge sigma gives inf (a flat window), not OverflowError.
    taps = torch.exp(-(coords * coords) / (2.0 * sigma * sigma))
    return taps / taps.sum()


def gaussian_window(settings: SSIMSettings, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian taps of length ``window_size`` (computed in float64).

    Cached per window, dtype and device (a shared tensor: do not modify it); under
    ``torch.compile`` a constant of the graph.
    """
    return _window_on(settings.window_size, settings.sigma, dtype, torch.device(device))


# torch.compile traces through the cache: without the mark, every call of a compiled
# graph would build the taps on the host and copy them to the device, a per-call copy
# that CUDA graphs (mode="reduce-overhead") cannot capture.
@cached_tensors
@torch.compiler.assume_constant_result
def _window_on(window_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return _gaussian_taps(window_size, sigma).to(dtype=dtype, device=device)
