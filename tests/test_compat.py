"""The drop-in modules ``fastssim.compat.*`` against the installed peers on the peers' own settings.

Values to 1e-5 absolute, both gradients to 1e-4 relative to the largest entry (see
``peer_helpers``); the fused-ssim shim against a float64 zero-padding oracle (the reference
with ``padding="zeros"``) on the CPU, and against ``fused_ssim`` itself where CUDA and the
package exist. The 2-D shims also run on Triton (through the interpreter without a GPU).
"""
import doctest
import importlib

import kornia
import pytest
import pytorch_msssim
import torch

from fastssim import reference
from fastssim._options import SSIMSettings
from fastssim.compat import fused_ssim as fs
from fastssim.compat import kornia as kc
from fastssim.compat import pytorch_msssim as pm
from conftest import correlated_pair
from peer_helpers import assert_matches, values_and_grads

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float64, torch.float32]


# ---------------------------------------------------------------- pytorch-msssim

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size_average", [True, False])
def test_pytorch_msssim_ssim_defaults(dtype, size_average):
    x, y = correlated_pair((2, 3, 23, 26), dtype, seed=1)
    x, y = 255 * x, 255 * y
    ours = values_and_grads(lambda a, b: pm.ssim(a, b, size_average=size_average), x, y)
    theirs = values_and_grads(lambda a, b: pytorch_msssim.ssim(a, b, size_average=size_average), x, y)
    assert_matches(ours, theirs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pytorch_msssim_ssim_settings(dtype):
    # Anti-correlated channels make some per-channel SSIM negative, so the relu acts.
    x, y = correlated_pair((2, 3, 17, 19), dtype, seed=2)
    y = torch.cat([y[:, :1], 1 - x[:, 1:]], dim=1)
    settings = dict(data_range=1.0, win_size=7, win_sigma=1.2, K=(0.02, 0.04), nonnegative_ssim=True)
    ours = values_and_grads(lambda a, b: pm.ssim(a, b, size_average=False, **settings), x, y)
    theirs = values_and_grads(lambda a, b: pytorch_msssim.ssim(a, b, size_average=False, **settings), x, y)
    assert_matches(ours, theirs)
    assert ours[0].min() > 0 and theirs[0].min() > 0


def test_pytorch_msssim_win_argument():
    x, y = correlated_pair((1, 2, 15, 16), torch.float64, seed=3)
    # The package module is shadowed by its `ssim` function, hence import_module.
    win = importlib.import_module("pytorch_msssim.ssim")._fspecial_gauss_1d(5, 0.9).repeat(2, 1, 1, 1)
    assert abs(pm.ssim(x, y, data_range=1.0, win=win) - pytorch_msssim.ssim(x, y, data_range=1.0, win=win)) < 1e-6
    with pytest.raises(ValueError, match="Gaussian"):
        pm.ssim(x, y, win=torch.full((2, 1, 1, 5), 0.2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_pytorch_msssim_5d_and_squeezed_dims(dtype):
    x, y = correlated_pair((1, 2, 12, 13, 14), dtype, seed=4)
    ours = values_and_grads(lambda a, b: pm.ssim(a, b, data_range=1.0, win_size=5), x, y)
    theirs = values_and_grads(lambda a, b: pytorch_msssim.ssim(a, b, data_range=1.0, win_size=5), x, y)
    assert_matches(ours, theirs)
    flat = x[:, :, :1], y[:, :, :1]  # (N, C, 1, H, W) is squeezed to an image
    assert abs(pm.ssim(*flat, data_range=1.0, win_size=5)
               - pytorch_msssim.ssim(*flat, data_range=1.0, win_size=5)) < 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
def test_pytorch_msssim_ms_ssim(dtype):
    x, y = correlated_pair((2, 1, 35, 40), dtype, seed=5)
    settings = dict(data_range=1.0, win_size=3, weights=[0.1, 0.2, 0.3, 0.2, 0.2])
    ours = values_and_grads(lambda a, b: pm.ms_ssim(a, b, size_average=False, **settings), x, y)
    theirs = values_and_grads(lambda a, b: pytorch_msssim.ms_ssim(a, b, size_average=False, **settings), x, y)
    assert_matches(ours, theirs)


def test_pytorch_msssim_modules():
    x, y = correlated_pair((2, 1, 40, 36), torch.float32, seed=6)
    for ours, theirs in (
            (pm.SSIM(data_range=1.0, win_size=5, channel=1), pytorch_msssim.SSIM(data_range=1.0, win_size=5, channel=1)),
            (pm.SSIM(data_range=1.0, channel=1, nonnegative_ssim=True, K=(0.01, 0.05)),
             pytorch_msssim.SSIM(data_range=1.0, channel=1, nonnegative_ssim=True, K=(0.01, 0.05))),
            (pm.MS_SSIM(data_range=1.0, win_size=3, channel=1, size_average=False),
             pytorch_msssim.MS_SSIM(data_range=1.0, win_size=3, channel=1, size_average=False))):
        assert_matches(values_and_grads(ours, x, y), values_and_grads(theirs, x, y))


def test_pytorch_msssim_readme_usage_is_a_drop_in():
    """pytorch-msssim's README example, run with either import, gives the same numbers."""
    gen = torch.Generator().manual_seed(7)
    X = torch.rand(2, 3, 162, 170, generator=gen) * 255
    Y = (0.8 * X + 0.2 * 255 * torch.rand(2, 3, 162, 170, generator=gen)).round()

    def usage(lib):
        return [lib.ssim(X, Y, data_range=255, size_average=False),
                lib.ms_ssim(X, Y, data_range=255, size_average=False),
                1 - lib.ssim(X, Y, data_range=255, size_average=True),
                1 - lib.ms_ssim(X, Y, data_range=255, size_average=True),
                1 - lib.SSIM(data_range=255, size_average=True, channel=3)(X, Y),
                1 - lib.MS_SSIM(data_range=255, size_average=True, channel=3)(X, Y)]

    for ours, theirs in zip(usage(pm), usage(pytorch_msssim)):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        assert (ours - theirs).abs().max() < 1e-5


@pytest.mark.parametrize("call,error,match", [
    (lambda x: pm.ssim(x, x[..., :-1]), ValueError, "X and Y must have the same shape"),
    (lambda x: pm.ssim([1.0], x), TypeError, "X must be a torch.Tensor"),
    (lambda x: pm.ssim(x[0, 0], x[0, 0]), ValueError, r"X must have shape \(N, C, H, W\)"),
    (lambda x: pm.ssim(x, x, win_size=4), ValueError, "win_size must be odd"),
    (lambda x: pm.ssim(x, x, win_size=21), ValueError, "every side must be >= win_size=21"),
    (lambda x: pm.ssim(x, x, K=0.01), TypeError, r"K must be a pair"),
    (lambda x: pm.ms_ssim(x, x), ValueError, r"> \(win_size - 1\) \* 2\*\*4 = 160"),
    (lambda x: pm.SSIM(channel=2)(x, x), ValueError, "pass channel=3"),
    (lambda x: pm.SSIM(spatial_dims=3)(x, x), ValueError, "spatial_dims=3"),
    (lambda x: pm.SSIM(spatial_dims=1), ValueError, "spatial_dims must be 2 or 3"),
])
def test_pytorch_msssim_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.rand(1, 3, 20, 20))


# ---------------------------------------------------------------- kornia

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("eps", [1e-12, 0.0])
def test_kornia_ssim_map(dtype, padding, eps):
    x, y = correlated_pair((2, 2, 16, 19), dtype, seed=8)
    ours = values_and_grads(lambda a, b: kc.ssim(a, b, 7, 1.0, eps, padding), x, y)
    theirs = values_and_grads(lambda a, b: kornia.metrics.ssim(a, b, 7, 1.0, eps, padding), x, y)
    assert_matches(ours, theirs)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("padding", ["same", "VALID"])
def test_kornia_ssim_loss(reduction, padding):
    x, y = correlated_pair((1, 3, 20, 18), torch.float32, seed=9)
    x, y = 255 * x, 255 * y
    ours = values_and_grads(lambda a, b: kc.ssim_loss(a, b, 11, 255.0, reduction=reduction, padding=padding), x, y)
    theirs = values_and_grads(
        lambda a, b: kornia.losses.ssim_loss(a, b, 11, 255.0, reduction=reduction, padding=padding), x, y)
    # A sum adds the float32 rounding of every pixel: 1e-5 per pixel.
    assert_matches(ours, theirs, atol=1e-5 * (x[:, :, 5:-5, 5:-5].numel() if reduction == "sum" else 1))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_kornia_loss_clamp_is_reproduced(monkeypatch, reduction):
    # Feed both losses one map with values outside [-1, 1] (float32 cancellation produces
    # such maps, e.g. under a large constant offset) and compare kornia's loss code with ours.
    ssim_map = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 1.5], dtype=torch.float64).view(1, 1, 2, 3)
    monkeypatch.setattr(kc, "ssim", lambda *args, **kwargs: args[0] * ssim_map)
    monkeypatch.setattr(kornia.metrics, "ssim", lambda *args, **kwargs: args[0] * ssim_map)
    ones = torch.ones(1, 1, 2, 3, dtype=torch.float64)
    ours = values_and_grads(lambda a, b: kc.ssim_loss(a, b, 3, reduction=reduction), ones, ones, need=("x",))
    theirs = values_and_grads(lambda a, b: kornia.losses.ssim_loss(a, b, 3, reduction=reduction), ones, ones,
                              need=("x",))
    assert_matches(ours, theirs, atol=0, grad_rtol=0)
    assert (ours[1].flatten()[[0, 5]] == 0).all()  # no gradient where the clamp acts


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_kornia_volumes(dtype, padding):
    x, y = correlated_pair((1, 2, 9, 10, 11), dtype, seed=10)
    ours = values_and_grads(lambda a, b: kc.ssim3d(a, b, 5, padding=padding), x, y)
    theirs = values_and_grads(lambda a, b: kornia.metrics.ssim3d(a, b, 5, padding=padding), x, y)
    assert_matches(ours, theirs)
    ours = values_and_grads(lambda a, b: kc.ssim3d_loss(a, b, 3, reduction="mean", padding=padding), x, y)
    theirs = values_and_grads(lambda a, b: kornia.losses.ssim3d_loss(a, b, 3, reduction="mean", padding=padding),
                              x, y)
    assert_matches(ours, theirs)


def test_kornia_modules():
    x, y = correlated_pair((2, 1, 12, 13), torch.float64, seed=11)
    pairs = [(kc.SSIM(5), kornia.metrics.SSIM(5)),
             (kc.SSIMLoss(3, 2.0, reduction="sum", padding="valid"),
              kornia.losses.SSIMLoss(3, 2.0, reduction="sum", padding="valid"))]
    for ours, theirs in pairs:
        assert_matches(values_and_grads(ours, x, y), values_and_grads(theirs, x, y))
    v, w = correlated_pair((1, 1, 7, 8, 9), torch.float64, seed=12)
    pairs = [(kc.SSIM3D(3, padding="valid"), kornia.metrics.SSIM3D(3, padding="valid")),
             (kc.SSIM3DLoss(5, reduction="none"), kornia.losses.SSIM3DLoss(5, reduction="none"))]
    for ours, theirs in pairs:
        assert_matches(values_and_grads(ours, v, w), values_and_grads(theirs, v, w))


@pytest.mark.parametrize("x,y,dtype", [
    (torch.randint(0, 255, (1, 1, 9, 9), dtype=torch.uint8), torch.randint(0, 255, (1, 1, 9, 9)), torch.float32),
    (torch.rand(1, 1, 9, 9).half(), torch.rand(1, 1, 9, 9).half(), torch.float16),
    (torch.rand(1, 1, 9, 9), torch.rand(1, 1, 9, 9).double(), torch.float64),
])
def test_kornia_dtypes(x, y, dtype):
    ours = kc.ssim(x, y, 5, 255.0)
    theirs = kornia.metrics.ssim(x, y, 5, 255.0, eps=0.0)
    assert ours.dtype == theirs.dtype == dtype
    assert (ours.double() - theirs.double()).abs().max() < (1e-3 if dtype == torch.float16 else 1e-5)


@pytest.mark.parametrize("call,error,match", [
    (lambda x: kc.ssim(x, x[..., :-1], 5), ValueError, "img1 and img2 must have the same shape"),
    (lambda x: kc.ssim(x, "y", 5), TypeError, "img2 must be a torch.Tensor"),
    (lambda x: kc.ssim(x[0], x[0], 5), ValueError, r"img1 must have shape \(B, C, H, W\)"),
    (lambda x: kc.ssim3d(x, x, 5), ValueError, r"img1 must have shape \(B, C, D, H, W\)"),
    (lambda x: kc.ssim(x, x, 4), ValueError, "window_size must be odd"),
    (lambda x: kc.ssim(x, x, 5.0), TypeError, "window_size must be an int"),
    (lambda x: kc.ssim(x, x, 5, padding="reflect"), ValueError, "padding must be 'same' or 'valid'"),
    (lambda x: kc.ssim(x, x, 5, eps=-1.0), ValueError, "eps must be a non-negative"),
    (lambda x: kc.ssim(x, x, 25), ValueError, "every side must be > window_size // 2 = 12"),
    (lambda x: kc.ssim(x, x, 15, padding="valid"), ValueError, "every side >= window_size=15"),
    (lambda x: kc.ssim_loss(x, x, 5, reduction="max"), ValueError, "reduction must be one of"),
    (lambda x: kc.SSIM3DLoss(5, reduction="avg")(x[..., None], x[..., None]), ValueError, "reduction"),
])
def test_kornia_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.rand(1, 2, 12, 12))


# ---------------------------------------------------------------- fused-ssim

def _zeros_oracle(img1, img2, padding):
    """Float64 mean SSIM with fused-ssim's settings: window 11, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2."""
    settings = SSIMSettings(padding="zeros" if padding == "same" else "valid")
    return reference.ssim_map(img1.double(), img2.double(), settings).mean()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_fused_ssim_matches_the_zero_padding_oracle(dtype, padding):
    x, y = correlated_pair((2, 3, 19, 23), dtype, seed=13)
    ours = values_and_grads(lambda a, b: fs.fused_ssim(a, b, padding), x, y)
    oracle = values_and_grads(lambda a, b: _zeros_oracle(a, b, padding), x, y, need=("x",))
    assert ours[2] is None  # fused-ssim differentiates img1 only
    assert ours[0].dtype == dtype
    assert_matches(ours, oracle, check_dtype=False)


def test_fused_ssim_inference_and_volumes():
    x, y = correlated_pair((1, 1, 8, 9), seed=14)
    x.requires_grad_()
    value = fs.fused_ssim(x, y, train=False)
    assert not value.requires_grad and value == fs.fused_ssim(x, y)
    v, w = correlated_pair((1, 2, 6, 7, 8), torch.float64, seed=15)
    expected = reference.ssim_map(v, w, SSIMSettings(padding="zeros")).mean()
    assert abs(fs.fused_ssim3d(v, w) - expected) < 1e-12


@pytest.mark.parametrize("call,error,match", [
    (lambda x: fs.fused_ssim(x, x, padding="reflect"), ValueError, "padding must be 'same' or 'valid'"),
    (lambda x: fs.fused_ssim(x, x, padding="valid"), ValueError, "every side must be >= 11"),
    (lambda x: fs.fused_ssim(x, x, train=1), TypeError, "train must be a bool"),
    (lambda x: fs.fused_ssim(x[0], x[0]), ValueError, r"img1 must have shape \(B, C, H, W\)"),
    (lambda x: fs.fused_ssim(x, x.mT), ValueError, "same shape"),
    (lambda x: fs.fused_ssim3d(x, x), ValueError, r"img1 must have shape \(B, C, D, H, W\)"),
])
def test_fused_ssim_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.rand(1, 2, 9, 10))


@pytest.mark.gpu
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_fused_ssim_matches_the_package(padding):
    fused = pytest.importorskip("fused_ssim")
    x, y = correlated_pair((2, 3, 64, 80), device="cuda", seed=16)
    ours = values_and_grads(lambda a, b: fs.fused_ssim(a, b, padding), x, y)
    theirs = values_and_grads(lambda a, b: fused.fused_ssim(a, b, padding), x, y)
    assert_matches(ours, theirs)


# ---------------------------------------------------------------- Triton, and the docs

@pytest.mark.parametrize("name,ours,theirs", [
    ("kornia same", lambda a, b: kc.ssim(a, b, 5, backend="triton"), lambda a, b: kornia.metrics.ssim(a, b, 5)),
    ("kornia valid loss", lambda a, b: kc.ssim_loss(a, b, 3, padding="valid", reduction="none", backend="triton"),
     lambda a, b: kornia.losses.ssim_loss(a, b, 3, padding="valid", reduction="none")),
    ("pytorch-msssim", lambda a, b: pm.ssim(a, b, 1.0, False, 7, backend="triton"),
     lambda a, b: pytorch_msssim.ssim(a, b, 1.0, False, 7)),
    ("fused-ssim", lambda a, b: fs.fused_ssim(a, b, backend="triton"), lambda a, b: _zeros_oracle(a, b, "same")),
])
def test_2d_shims_on_triton(name, ours, theirs):
    x, y = correlated_pair((2, 2, 13, 15), seed=17, device=DEVICE)
    mine = values_and_grads(ours, x, y)
    # The peers run in float64: the reference numbers the float32 kernels are held to.
    ref = values_and_grads(theirs, x.double(), y.double(), need=("x",) if name == "fused-ssim" else ("x", "y"))
    assert mine[0].dtype == torch.float32
    assert_matches(mine, ref, check_dtype=False)


@pytest.mark.parametrize("module", ["fastssim.compat.pytorch_msssim", "fastssim.compat.kornia",
                                    "fastssim.compat.fused_ssim"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0
