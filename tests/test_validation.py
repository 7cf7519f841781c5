"""Every bad input gets a TypeError/ValueError that names the argument."""
import pytest
import torch

import fastssim
from fastssim import SSIMDistillLoss, SSIMLoss

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
])
def test_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastssim.ssim(X, X, **kwargs)


def test_integer_sigma_and_data_range_are_accepted():
    assert fastssim.ssim(X, X, sigma=1, data_range=1).item() == pytest.approx(1.0)


@pytest.mark.parametrize("x,y,error,match", [
    ([1.0], X, TypeError, "x must be a torch.Tensor, got list"),
    (X, None, TypeError, "y must be a torch.Tensor, got NoneType"),
    (X.long(), X.long(), TypeError, "x must be float64, float32, float16 or bfloat16, got torch.int64"),
    (X.to(torch.complex64), X, TypeError, "x must be float64"),
    (X[0], X[0], ValueError, r"x must have shape \(N, C, H, W\), got a 3-D tensor"),
    (X[None], X[None], ValueError, "got a 5-D tensor"),
    (X, X[:, :1], ValueError, "x and y must have the same shape"),
    (X, X.double(), TypeError, "x and y must have the same dtype"),
    (X[:0], X[:0], ValueError, "x is empty"),
    (X, X.to("meta"), ValueError, "x and y must be on the same device"),
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
