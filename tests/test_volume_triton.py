"""3-D SSIM on the Triton backend (``fastssim.kernels.volume``; the interpreter on the CPU).

Tolerances against the float64 reference on the same (rounded) input values: SSIM values
1e-5 absolute, gradients 1e-4 relative to the largest entry; half-precision gradients are
stored in the input dtype, so 2e-3 (float16) and 1e-2 (bfloat16) relative. Volumes are small:
the interpreter costs about a second per launch at these sizes.
"""
import kornia
import pytest
import pytorch_msssim
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import fastssim.compat.kornia as kc
import fastssim.compat.pytorch_msssim as pm
from fastssim import ssim3d
from fastssim._dispatch import available_backends
from fastssim.kernels.ssim import CAPABILITIES
from conftest import correlated_pair
from peer_helpers import assert_matches, values_and_grads

pytestmark = pytest.mark.skipif("triton" not in available_backends(),
                                reason="needs CUDA or the Triton interpreter")

SHAPE = (1, 2, 3, 5, 9)


def _triton_and_reference(x, y, **kwargs):
    """``ssim3d`` values and gradients on Triton for ``x, y`` and on the float64 reference
    for the same values."""
    ours = values_and_grads(lambda a, b: ssim3d(a, b, backend="triton", **kwargs), x, y)
    reference = values_and_grads(lambda a, b: ssim3d(a, b, backend="torch", **kwargs),
                                 x.double(), y.double())
    return ours, reference


@pytest.mark.parametrize("padding,reduction", [
    ("valid", "none"), ("reflect", "none"), ("zeros", "none"),
    ("reflect", "channel"), ("zeros", "sample"), ("valid", "mean"),
])
def test_matches_float64_reference(padding, reduction):
    x, y = correlated_pair(SHAPE, seed=1)
    ours, reference = _triton_and_reference(x, y, window_size=3, padding=padding, reduction=reduction)
    assert ours[0].dtype == torch.float32
    assert_matches(ours, reference, check_dtype=False)


@pytest.mark.parametrize("padding,window_size,shape", [("reflect", 7, (1, 1, 4, 4, 8)),
                                                        ("valid", 5, (1, 1, 5, 6, 7))])
def test_larger_windows(padding, window_size, shape):
    x, y = correlated_pair(shape, seed=2)
    ours, reference = _triton_and_reference(x, y, window_size=window_size, padding=padding,
                                            reduction="none")
    assert_matches(ours, reference, check_dtype=False)


@pytest.mark.parametrize("components", ["s", "c", "lc"])
def test_components(components):
    x, y = correlated_pair((1, 1, 3, 4, 6), seed=3)
    ours, reference = _triton_and_reference(x, y, window_size=3, padding="zeros",
                                            components=components, reduction="none")
    assert_matches(ours, reference, check_dtype=False)


@pytest.mark.parametrize("dtype,grad_rtol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_half_precision(dtype, grad_rtol):
    x, y = correlated_pair(SHAPE, dtype, seed=4)
    ours, reference = _triton_and_reference(x, y, window_size=3, padding="reflect", reduction="none")
    assert ours[1].dtype == ours[2].dtype == dtype
    assert_matches(ours, reference, grad_rtol=grad_rtol, check_dtype=False)


def test_non_contiguous_input_gives_the_contiguous_result():
    # Width-major storage viewed as (N, C, D, H, W), every other row: no unit stride along width.
    x, y = (torch.rand(1, 2, 9, 8, 3, generator=torch.Generator().manual_seed(seed))
            .permute(0, 1, 4, 3, 2)[:, :, :, ::2] for seed in (0, 1))
    assert not x.is_contiguous() and x.shape == (1, 2, 3, 4, 9)
    strided, dense = (values_and_grads(lambda a, b: ssim3d(a, b, window_size=3, padding="zeros",
                                                           reduction="none", backend="triton"), a, b)
                      for a, b in ((x, y), (x.contiguous(), y.contiguous())))
    for mine, ref in zip(strided, dense):
        assert torch.equal(mine, ref)


def test_large_offset_is_exact():
    x, y = correlated_pair(SHAPE, seed=5)
    x, y = x + 1000, y + 1000
    ours, reference = _triton_and_reference(x, y, window_size=3, padding="zeros", reduction="channel")
    assert_matches(ours, reference, check_dtype=False)


def test_deterministic():
    x, y = correlated_pair((1, 1, 3, 4, 40), seed=6)
    first, second = (values_and_grads(lambda a, b: ssim3d(a, b, window_size=3, backend="triton"), x, y)
                     for _ in range(2))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_kornia_ssim3d_through_the_shim():
    x, y = correlated_pair((1, 1, 3, 4, 7), seed=7)
    ours = values_and_grads(lambda a, b: kc.ssim3d(a, b, 5, backend="triton"), x, y)
    theirs = values_and_grads(lambda a, b: kornia.metrics.ssim3d(a, b, 5, eps=0.0), x.double(), y.double())
    assert_matches(ours, theirs, check_dtype=False)


def test_pytorch_msssim_5d_through_the_shim():
    x, y = correlated_pair((1, 2, 5, 5, 7), seed=8)
    ours = values_and_grads(lambda a, b: pm.ssim(a, b, 1.0, False, 5, backend="triton"), x, y)
    theirs = values_and_grads(lambda a, b: pytorch_msssim.ssim(a, b, 1.0, False, 5), x.double(), y.double())
    assert_matches(ours, theirs, check_dtype=False)


def test_only_the_inputs_that_require_grad_get_one():
    x, y = correlated_pair((1, 1, 4, 5, 6), seed=9)
    ours = values_and_grads(lambda a, b: ssim3d(a, b, window_size=3, backend="triton"), x, y, need=("x",))
    reference = values_and_grads(lambda a, b: ssim3d(a, b, window_size=3, backend="torch"),
                                 x.double(), y.double(), need=("x",))
    assert_matches(ours, reference, check_dtype=False)


def test_double_backward_raises():
    x, y = correlated_pair((1, 1, 3, 4, 5))
    x.requires_grad_()
    (grad,) = torch.autograd.grad(ssim3d(x, y, window_size=3, padding="zeros", backend="triton"), x,
                                  create_graph=True)
    with pytest.raises(RuntimeError, match="use backend='torch' for higher-order gradients"):
        grad.sum().backward()


def test_fake_shapes():
    taps = torch.tensor([0.25, 0.5, 0.25])
    terms = (0.01 ** 2, 0.03 ** 2, 1e-6 * 0.03 ** 2, 0, 7)  # c1, c2, sqrt_eps, valid, "lcs"
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(2, 3, 5, 6, 7, dtype=torch.bfloat16)
        volume_map = torch.ops.fastssim.ssim3d(x, x, taps, *terms, True)
        means = torch.ops.fastssim.ssim3d(x, x, taps, *terms, False)
        grads = torch.ops.fastssim.ssim3d_backward(x, x, volume_map, taps, *terms, True, True, False)
    assert volume_map.shape == (2, 3, 3, 4, 5) and volume_map.dtype == torch.float32
    assert means.shape == (2, 3)
    assert [g.shape for g in grads] == [x.shape] and grads[0].dtype == torch.bfloat16


def test_unsupported_settings_are_refused_on_triton():
    window_size = 2 * CAPABILITIES.max_volume_radius + 3
    x, y = correlated_pair((1, 1) + (window_size,) * 3)
    with pytest.raises(ValueError, match=f"window_size={window_size} is larger than the Triton volume kernels"):
        ssim3d(x, y, window_size=window_size, backend="triton")
    with pytest.raises(TypeError, match="use backend='torch' \\(or 'auto'\\) for float64"):
        ssim3d(x.double(), y.double(), window_size=3, backend="triton")


def test_auto_uses_the_reference_on_the_cpu():
    x, y = correlated_pair((1, 1, 6, 6, 6))
    assert ssim3d(x, y, window_size=3, backend="auto") == ssim3d(x, y, window_size=3, backend="torch")


def test_an_outlier_voxel_does_not_spoil_the_volume():
    # The shift that keeps large offsets exact must not come from one voxel (it once did).
    x, y = correlated_pair((1, 1, 7, 9, 11))
    x[..., 0, 0, 0] = 1e4
    ref = ssim3d(x.double(), y.double(), window_size=3, reduction="none", backend="torch")
    tri = ssim3d(x, y, window_size=3, reduction="none", backend="triton")
    far = (..., slice(2, None), slice(2, None), slice(2, None))  # windows that miss (0, 0, 0)
    assert (tri.double() - ref)[far].abs().max().item() < 1e-5
