"""MS-SSIM (``fastssim.ms_ssim``) against ``pytorch_msssim.ms_ssim``: values to 1e-5 absolute,
both gradients to 1e-4 relative to the largest entry, on the reference and on Triton (through
the interpreter on the CPU, with ``window_size=3`` so that 34-pixel sides pass the size rule).
"""
import doctest

import pytest
import pytorch_msssim
import torch

import fastssim
from fastssim import ms_ssim
from fastssim import multiscale
from conftest import correlated_pair
from peer_helpers import assert_matches, values_and_grads

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_reference_matches_pytorch_msssim_defaults():
    # The defaults need sides > 160; float32 is covered on smaller windows below.
    x, y = correlated_pair((1, 2, 161, 165), torch.float64, seed=1)
    x, y = 255 * x, 255 * y
    ours = values_and_grads(lambda a, b: ms_ssim(a, b, data_range=255, reduction="sample"), x, y)
    theirs = values_and_grads(lambda a, b: pytorch_msssim.ms_ssim(a, b, size_average=False), x, y)
    assert_matches(ours, theirs)


@pytest.mark.parametrize("kwargs,peer_kwargs", [
    (dict(window_size=5, sigma=1.0, k1=0.02, k2=0.05),
     dict(win_size=5, win_sigma=1.0, K=(0.02, 0.05))),
    (dict(window_size=3, weights=(0.2, 0.3, 0.5)), dict(win_size=3, weights=[0.2, 0.3, 0.5])),
])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_matches_pytorch_msssim_settings(kwargs, peer_kwargs, dtype):
    x, y = correlated_pair((1, 2, 67, 81), dtype, seed=2)
    ours = values_and_grads(lambda a, b: ms_ssim(a, b, **kwargs), x, y)
    theirs = values_and_grads(lambda a, b: pytorch_msssim.ms_ssim(a, b, data_range=1.0, **peer_kwargs), x, y)
    assert_matches(ours, theirs)


@pytest.mark.parametrize("need", [("x", "y"), ("y",)])
def test_triton_matches_pytorch_msssim(need):
    x, y = correlated_pair((1, 2, 34, 37), torch.float32, seed=3, device=DEVICE)
    ours = values_and_grads(lambda a, b: ms_ssim(a, b, window_size=3, reduction="channel",
                                                 backend="triton"), x, y, need=need)
    theirs = values_and_grads(_peer_per_channel, x.double(), y.double(), need=need)
    assert ours[0].dtype == torch.float32
    assert_matches(ours, theirs, check_dtype=False)


def _peer_per_channel(x, y):
    """pytorch-msssim's MS-SSIM of each channel separately, ``(N, C)``."""
    return torch.stack([pytorch_msssim.ms_ssim(x[:, c:c + 1], y[:, c:c + 1], data_range=1.0, win_size=3,
                                               size_average=False) for c in range(x.shape[1])], dim=1)


def test_triton_uses_two_calls_for_all_scales(monkeypatch):
    calls = []
    real = multiscale.ssim_levels

    def counting(xs, ys, settings, per_pixel, backend):
        calls.append((len(xs), settings.components))
        return real(xs, ys, settings, per_pixel, backend)

    monkeypatch.setattr(multiscale, "ssim_levels", counting)
    x, y = correlated_pair((1, 1, 34, 34), device=DEVICE)
    ms_ssim(x, y, window_size=3, backend="triton")
    assert calls == [(4, "cs"), (1, "lcs")]


def test_volumes_match_pytorch_msssim():
    x, y = correlated_pair((1, 2, 35, 36, 37), torch.float64, seed=4)
    ours = values_and_grads(lambda a, b: ms_ssim(a, b, window_size=3), x, y)
    theirs = values_and_grads(lambda a, b: pytorch_msssim.ms_ssim(a, b, data_range=1.0, win_size=3), x, y)
    assert_matches(ours, theirs)


def test_nonnegative_clamps_negative_scales_like_pytorch_msssim():
    x, _ = correlated_pair((1, 1, 40, 40), torch.float64, seed=5)
    y = 1 - x  # anti-correlated: contrast-structure is negative at the finest scales
    ours = values_and_grads(lambda a, b: ms_ssim(a, b, window_size=3), x, y)
    theirs = values_and_grads(lambda a, b: pytorch_msssim.ms_ssim(a, b, data_range=1.0, win_size=3), x, y)
    assert_matches(ours, theirs)
    assert ours[0].item() == 0.0 and torch.isfinite(ours[1]).all()
    assert torch.isnan(ms_ssim(x, y, window_size=3, nonnegative=False))


def test_reductions_and_dtypes():
    x, y = correlated_pair((2, 3, 40, 41), torch.float64, seed=6)
    per_channel = ms_ssim(x, y, window_size=3, reduction="channel")
    assert per_channel.shape == (2, 3)
    assert torch.allclose(ms_ssim(x, y, window_size=3, reduction="sample"), per_channel.mean(1), atol=1e-15)
    assert abs(ms_ssim(x, y, window_size=3).item() - per_channel.mean().item()) < 1e-15
    assert ms_ssim(x.bfloat16(), y.bfloat16(), window_size=3).dtype == torch.float32
    assert ms_ssim(x, x, window_size=3).item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shape,kwargs,error,match", [
    ((1, 1, 160, 200), {}, ValueError, r"every side must be > \(window_size - 1\) \* 2\*\*4 = 160"),
    ((1, 1, 36, 36), {"window_size": 3, "weights": (0.1,) * 6}, ValueError, "2\\*\\*5 = 64"),
    ((1, 1, 40, 40, 16), {"window_size": 3}, ValueError, "40x40x16 is too small"),
    ((1, 1, 40, 40), {"window_size": 3, "reduction": "none"}, ValueError, "reduction"),
    ((1, 1, 40, 40), {"window_size": 3, "weights": ()}, TypeError, "weights"),
    ((1, 1, 40, 40), {"window_size": 3, "weights": ("a", 1.0)}, TypeError, "weights"),
    ((40, 40), {"window_size": 3}, ValueError, r"x must have shape \(N, C, H, W\)"),
])
def test_bad_input(shape, kwargs, error, match):
    x = torch.rand(shape)
    with pytest.raises(error, match=match):
        ms_ssim(x, x.clone(), **kwargs)


def test_docstring_examples_run():
    result = doctest.testmod(fastssim.multiscale, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0
