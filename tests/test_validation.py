"""Every bad input gets a TypeError/ValueError that names the argument."""
import pytest
import torch

import fastssim
from fastssim import SSIMDistillLoss, SSIMLoss, _triton_function, functional
from fastssim._options import SSIMSettings
from fastssim.functional import ssim_levels

X = torch.rand(1, 2, 16, 16)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(window_size=10), ValueError, "window_size must be odd"),
    (dict(window_size=1), ValueError, "window_size must be >= 3"),
    (dict(window_size=11.0), TypeError, "window_size must be an int"),
    (dict(window_size=True), TypeError, "window_size must be an int"),
    (dict(sigma=0), ValueError, "sigma must be a positive"),
    (dict(sigma="1.5"), TypeError, "sigma must be a real number"),
    (dict(data_range=-1.0), ValueError, "data_range must be a positive"),
    (dict(data_range=float("nan")), ValueError, "data_range must be a positive"),
    (dict(k1=0.0), ValueError, "k1 must be a positive"),
    (dict(k2=float("inf")), ValueError, "k2 must be a positive"),
    (dict(padding="same"), ValueError, "padding must be one of"),
    (dict(reduction="sum"), ValueError, "reduction must be one of"),
    (dict(backend="cuda"), ValueError, "backend must be one of"),
    (dict(components="lx"), ValueError, "components must be"),
    (dict(components=""), ValueError, "components must be"),
    (dict(components="ll"), ValueError, "components must be"),
    # Extreme settings that overflowed (OverflowError) or gave NaN.
    (dict(data_range=1e200), ValueError, r"data_range=1e\+200 with k1=0.01 gives C1 .* outside float32"),
    (dict(data_range=1e-30), ValueError, "gives C1 .* outside float32's normal range"),
    (dict(k2=1e-30), ValueError, r"k2=1e-30 gives C2 = \(k2\*data_range\)\*\*2"),
    (dict(data_range=1e20), ValueError, "data_range=1e\\+20 is too large: the squares"),
    (dict(sigma=1e-200), ValueError, "sigma=1e-200 is too small"),
])
def test_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastssim.ssim(X, X, **kwargs)


def test_integer_sigma_and_data_range_are_accepted():
    assert fastssim.ssim(X, X, sigma=1, data_range=1).item() == pytest.approx(1.0)


def test_extreme_but_valid_settings_give_finite_ssim():
    # A huge sigma is a flat window (it used to raise OverflowError); a tiny one a 1-pixel window.
    y = torch.rand(1, 2, 16, 16)
    for kwargs in (dict(sigma=1e200), dict(sigma=1e-100), dict(data_range=1e-15), dict(data_range=1e18)):
        assert torch.isfinite(fastssim.ssim(X, y, **kwargs)), kwargs
    flat = torch.ones(11, dtype=torch.float64) / 11
    assert torch.equal(fastssim._options.gaussian_window(
        fastssim._options.SSIMSettings(sigma=1e200), torch.float64, "cpu"), flat)


@pytest.mark.parametrize("halve", ["no", 1, None])
def test_halve_must_be_a_bool(halve):
    with pytest.raises(TypeError, match="halve must be True or False"):
        fastssim.ssim_loss(X, X, halve=halve)


@pytest.mark.parametrize("x,y,error,match", [
    ([1.0], X, TypeError, "x must be a torch.Tensor, got list"),
    (X, None, TypeError, "y must be a torch.Tensor, got NoneType"),
    (X.long(), X.long(), TypeError, r"x must be float64, float32, float16 or bfloat16, got torch.int64; "
                                    r"for integer images use x.float\(\) with data_range set"),
    ((X * 255).to(torch.uint8), X, TypeError, r"got torch.uint8; for integer images use x.float\(\) "
                                              "with data_range=255"),
    (X, X.bool(), TypeError, r"y must be float64.*use y.float\(\)"),
    (X.to(torch.complex64), X, TypeError, "x must be float64"),
    (X[0], X[0], ValueError, r"x must have shape \(N, C, H, W\), got a 3-D tensor.*use x.unsqueeze\(0\)"),
    (X[None], X[None], ValueError, "got a 5-D tensor"),
    (X.numpy(), X, TypeError, r"x must be a torch.Tensor, got ndarray; convert it with torch.from_numpy\(x\)"),
    ("image.png", X, TypeError, "x must be a torch.Tensor, got str"),
    (X, X[:, :1], ValueError, "x and y must have the same shape"),
    (X, X.double(), TypeError, "x and y must have the same dtype"),
    (X[:0], X[:0], ValueError, "x is empty"),
    (X.to("meta"), X.to("meta"), ValueError, "x is a meta tensor, which holds no values"),
    (X, X.to("meta"), ValueError, "y is a meta tensor"),
])
def test_bad_tensors(x, y, error, match):
    with pytest.raises(error, match=match):
        fastssim.ssim(x, y)


@pytest.mark.parametrize("padding,size,match", [
    ("valid", (10, 16), "smaller than window_size=11 with padding='valid'"),
    ("reflect", (5, 16), r"each side must be > 5\); use padding='zeros'"),
    ("reflect", (16, 3), "too small for window_size=11"),
])
def test_too_small_for_window(padding, size, match):
    x = torch.rand(1, 1, *size)
    with pytest.raises(ValueError, match=match):
        fastssim.ssim(x, x, padding=padding)


def test_zeros_padding_accepts_tiny_maps():
    x = torch.rand(1, 1, 1, 1)
    assert fastssim.ssim(x, x, padding="zeros").item() == pytest.approx(1.0)


def test_triton_backend_unavailable_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="backend='triton' needs CUDA tensors"):
        fastssim.ssim(X, X, backend="triton")


def test_module_settings_are_checked_at_construction():
    with pytest.raises(ValueError, match="window_size must be odd"):
        SSIMLoss(window_size=4)
    with pytest.raises(ValueError, match="reduction must be one of"):
        SSIMLoss(reduction="avg")
    with pytest.raises(ValueError, match="normalize must be one of"):
        SSIMDistillLoss(normalize="image")
    with pytest.raises(TypeError, match="loss_weight must be a real number"):
        SSIMDistillLoss(loss_weight="2")
    with pytest.raises(ValueError, match="backend must be one of"):
        SSIMDistillLoss(backend="gpu")


def test_ssim_levels_promotes_mixed_dtypes_like_separate_calls():
    settings = SSIMSettings(window_size=5, padding="zeros")
    xs = [torch.rand(1, 2, 8, 8, dtype=torch.float16), torch.rand(1, 2, 6, 6, dtype=torch.float64)]
    ys = [torch.rand_like(x) for x in xs]
    levels = ssim_levels(xs, ys, settings, per_pixel=False, backend="torch")
    assert [v.dtype for v in levels] == [torch.float64, torch.float64]
    for x, y, got in zip(xs, ys, levels):
        expected = fastssim.ssim(x.double(), y.double(), window_size=5, padding="zeros", reduction="channel")
        assert torch.equal(got, expected)


def test_auto_backend_is_decided_over_all_levels(monkeypatch):
    # Level 0 alone would go to Triton; level 1 needs the reference: all levels must use it.
    monkeypatch.setattr(functional, "resolve_backend",
                        lambda backend, x, settings: "triton" if x.shape[-1] > 8 else "torch")
    monkeypatch.setattr(_triton_function, "ssim_levels_triton",
                        lambda *args: pytest.fail("Triton chosen although level 1 needs the reference"))
    xs = [torch.rand(1, 1, 12, 12), torch.rand(1, 1, 8, 8)]
    levels = ssim_levels(xs, xs, SSIMSettings(window_size=3), per_pixel=False, backend="auto")
    assert all(torch.allclose(v, torch.ones_like(v)) for v in levels)
