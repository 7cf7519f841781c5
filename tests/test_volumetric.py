"""3-D SSIM (``fastssim.ssim3d``) against a dense float64 oracle, the 2-D path, pytorch-msssim
(5-D, valid) and kornia's ``ssim3d`` (reflect).

Tolerances: float64 against the float64 oracle 1e-12; float32 input (computed in float32)
1e-5 absolute on values and 1e-4 relative (to the largest entry) on gradients; against the
peers the same 1e-5 / 1e-4.
"""
import doctest
import math

import kornia
import pytest
import pytorch_msssim
import torch
import torch.nn.functional as F

import fastssim
from fastssim import ssim3d
from conftest import correlated_pair
from peer_helpers import assert_matches, values_and_grads


def _oracle_map(x, y, window_size, sigma, padding, data_range=1.0):
    """SSIM map from one dense (non-separable) 3-D Gaussian convolution, in float64."""
    x, y = x.double(), y.double()
    offsets = torch.arange(window_size, dtype=torch.float64) - window_size // 2
    g = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    kernel = (g[:, None, None] * g[None, :, None] * g[None, None, :])[None, None]
    r = window_size // 2
    if padding != "valid":
        mode = "reflect" if padding == "reflect" else "constant"
        x, y = F.pad(x, (r,) * 6, mode=mode), F.pad(y, (r,) * 6, mode=mode)
    n, c = x.shape[:2]

    def blur(t):
        return F.conv3d(t.reshape(n * c, 1, *t.shape[2:]), kernel).reshape(n, c, *[s - 2 * r for s in t.shape[2:]])

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x ** 2, blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))


@pytest.mark.parametrize("padding", ["valid", "reflect", "zeros"])
@pytest.mark.parametrize("window_size,sigma", [(3, 0.8), (7, 1.5)])
def test_float64_matches_dense_oracle(padding, window_size, sigma):
    x, y = correlated_pair((2, 2, 9, 10, 11), torch.float64, seed=window_size)
    ours = values_and_grads(lambda a, b: ssim3d(a, b, window_size=window_size, sigma=sigma,
                                                padding=padding, reduction="none"), x, y)
    oracle = values_and_grads(lambda a, b: _oracle_map(a, b, window_size, sigma, padding), x, y)
    assert_matches(ours, oracle, atol=1e-12, grad_rtol=1e-10)


@pytest.mark.parametrize("padding", ["valid", "reflect", "zeros"])
def test_float32_matches_float64_oracle(padding):
    x, y = correlated_pair((1, 3, 12, 11, 10), torch.float32, seed=3)
    ours = values_and_grads(lambda a, b: ssim3d(a, b, window_size=5, padding=padding,
                                                reduction="channel"), x, y)
    oracle = values_and_grads(lambda a, b: _oracle_map(a, b, 5, 1.5, padding).mean(dim=(2, 3, 4)),
                              x.double(), y.double())
    assert ours[0].dtype == torch.float32
    assert_matches(ours, oracle, check_dtype=False)


@pytest.mark.parametrize("padding", ["valid", "reflect"])
def test_identical_slices_reproduce_the_2d_map(padding):
    x, y = correlated_pair((2, 2, 1, 13, 14), torch.float64, seed=5)
    depth = 7
    volume = ssim3d(x.expand(-1, -1, depth, -1, -1), y.expand(-1, -1, depth, -1, -1),
                    window_size=5, padding=padding, reduction="none")
    image = fastssim.ssim(x[:, :, 0], y[:, :, 0], window_size=5, padding=padding, reduction="none")
    for slice_map in volume.unbind(dim=2):
        assert (slice_map - image).abs().max() < 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_pytorch_msssim_5d(dtype):
    x, y = correlated_pair((2, 2, 13, 14, 15), dtype, seed=7)
    x, y = 255 * x, 255 * y
    ours = values_and_grads(lambda a, b: ssim3d(a, b, data_range=255, reduction="sample"), x, y)
    theirs = values_and_grads(lambda a, b: pytorch_msssim.ssim(a, b, size_average=False), x, y)
    assert_matches(ours, theirs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("window_size", [5, 11])
def test_matches_kornia_ssim3d(dtype, window_size):
    # kornia is run in float64: its own float32 ssim3d (a dense 3-D convolution) is up to
    # 1.8e-5 off its float64 map at window 11 on these inputs, fastssim's float32 1.5e-6.
    x, y = correlated_pair((1, 2, 12, 13, 11), dtype, seed=window_size)
    ours = values_and_grads(lambda a, b: ssim3d(a, b, window_size=window_size, padding="reflect",
                                                reduction="none"), x, y)
    theirs = values_and_grads(lambda a, b: kornia.metrics.ssim3d(a, b, window_size, eps=0.0),
                              x.double(), y.double())
    assert ours[0].dtype == dtype
    assert_matches(ours, theirs, check_dtype=False)


def test_reductions_and_components():
    x, y = correlated_pair((2, 3, 8, 9, 10), torch.float64, seed=1)
    full = ssim3d(x, y, window_size=3, reduction="none")
    assert full.shape == (2, 3, 6, 7, 8)
    per_channel = ssim3d(x, y, window_size=3, reduction="channel")
    assert torch.allclose(per_channel, full.mean(dim=(2, 3, 4)), rtol=0, atol=1e-14)
    assert torch.allclose(ssim3d(x, y, window_size=3, reduction="sample"), per_channel.mean(1), atol=1e-14)
    assert math.isclose(ssim3d(x, y, window_size=3).item(), per_channel.mean().item(), abs_tol=1e-14)
    luminance = ssim3d(x, y, window_size=3, components="l", reduction="none")
    contrast_structure = ssim3d(x, y, window_size=3, components="cs", reduction="none")
    assert (luminance * contrast_structure - full).abs().max() < 1e-14
    assert ssim3d(x.half(), y.half(), window_size=3).dtype == torch.float32


@pytest.mark.parametrize("x,y,kwargs,error,match", [
    ([1.0], torch.rand(1, 1, 5, 5, 5), {}, TypeError, "x must be a torch.Tensor"),
    (torch.rand(1, 1, 5, 5), torch.rand(1, 1, 5, 5), {}, ValueError, r"x must have shape \(N, C, D, H, W\)"),
    (torch.rand(1, 1, 5, 5, 5), torch.rand(1, 1, 5, 5, 6), {}, ValueError, "same shape"),
    (torch.rand(1, 1, 5, 5, 5), torch.rand(1, 1, 5, 5, 5).double(), {}, TypeError, "same dtype"),
    (torch.ones(1, 1, 5, 5, 5, dtype=torch.int32), torch.ones(1, 1, 5, 5, 5, dtype=torch.int32), {},
     TypeError, "x must be float64"),
    (torch.rand(1, 1, 0, 5, 5), torch.rand(1, 1, 0, 5, 5), {}, ValueError, "x is empty"),
    (torch.rand(1, 1, 4, 9, 9), torch.rand(1, 1, 4, 9, 9), {"window_size": 5}, ValueError,
     "4x9x9 is smaller than window_size=5 with padding='valid'"),
    (torch.rand(1, 1, 2, 9, 9), torch.rand(1, 1, 2, 9, 9), {"window_size": 5, "padding": "reflect"},
     ValueError, "each side must be > 2"),
    (torch.rand(1, 1, 5, 5, 5), torch.rand(1, 1, 5, 5, 5), {"window_size": 4}, ValueError, "odd"),
    (torch.rand(1, 1, 5, 5, 5), torch.rand(1, 1, 5, 5, 5), {"reduction": "sum"}, ValueError, "reduction"),
    (torch.rand(1, 1, 5, 5, 5), torch.rand(1, 1, 5, 5, 5), {"backend": "cuda"}, ValueError, "backend"),
])
def test_bad_input(x, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        ssim3d(x, y, **{"window_size": 3, **kwargs})


def test_zeros_padding_accepts_volumes_smaller_than_the_window():
    x, y = correlated_pair((1, 1, 2, 3, 4), torch.float64)
    assert ssim3d(x, y, window_size=7, padding="zeros", reduction="none").shape == (1, 1, 2, 3, 4)


def test_docstring_examples_run():
    result = doctest.testmod(fastssim.volumetric, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0
