"""The reference SSIM against established libraries, and its own properties.

Tolerances: float64 comparisons 1e-6 absolute on SSIM (pytorch-msssim builds its window
in float32, which alone moves SSIM by ~1e-7); float32 1e-5 absolute on SSIM (the issue's
bar); gradients 1e-6 relative to the largest gradient entry in float64.
"""
import kornia
import pytest
import pytorch_msssim
import torch
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

import fastssim
from fastssim import reference
from fastssim._options import SSIMSettings
from conftest import correlated_pair


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("data_range", [1.0, 255.0])
@pytest.mark.parametrize("shape", [(2, 3, 32, 40), (1, 5, 11, 17)])
def test_valid_matches_pytorch_msssim(shape, data_range):
    x, y = correlated_pair(shape, torch.float64)
    x, y = x * data_range, y * data_range
    ours = fastssim.ssim(x, y, data_range=data_range, reduction="sample")
    theirs = pytorch_msssim.ssim(x, y, data_range=data_range, size_average=False)
    assert (ours - theirs).abs().max() < 1e-6
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    fastssim.ssim(xs[0], y, data_range=data_range).backward()
    pytorch_msssim.ssim(xs[1], y, data_range=data_range).backward()
    assert _rel(xs[0].grad, xs[1].grad) < 1e-6


def test_valid_float32_matches_pytorch_msssim():
    x, y = correlated_pair((2, 3, 48, 37), torch.float32)
    assert (fastssim.ssim(x, y) - pytorch_msssim.ssim(x, y, data_range=1.0)).abs() < 1e-5


@pytest.mark.parametrize("window_size", [3, 7, 11])
def test_reflect_matches_kornia(window_size):
    x, y = correlated_pair((2, 3, 20, 29), torch.float64)
    ours = fastssim.ssim(x, y, window_size=window_size, padding="reflect", reduction="none")
    theirs = kornia.metrics.ssim(x, y, window_size)
    assert (ours - theirs).abs().max() < 1e-6
    loss = fastssim.ssim_loss(x, y, window_size=window_size, padding="reflect", halve=True)
    assert (loss - kornia.losses.ssim_loss(x, y, window_size)).abs() < 1e-6


def test_reflect_gradients_match_kornia():
    x, y = correlated_pair((2, 2, 16, 19), torch.float64)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    ys = [y.clone().requires_grad_(), y.clone().requires_grad_()]
    fastssim.ssim_loss(xs[0], ys[0], padding="reflect", halve=True).backward()
    kornia.losses.ssim_loss(xs[1], ys[1], 11).backward()
    assert _rel(xs[0].grad, xs[1].grad) < 1e-6
    assert _rel(ys[0].grad, ys[1].grad) < 1e-6


def test_reflect_matches_torchmetrics():
    # torchmetrics (>= 1.x) pads with reflect and averages the same-size map.
    x, y = correlated_pair((3, 2, 25, 30), torch.float64)
    ours = fastssim.ssim(x, y, padding="reflect", reduction="sample", k1=0.02, k2=0.05)
    theirs = tm_ssim(x, y, data_range=1.0, reduction="none", k1=0.02, k2=0.05)
    assert (ours - theirs).abs().max() < 1e-6
    x32, y32 = x.float(), y.float()
    assert (fastssim.ssim(x32, y32, padding="reflect") - tm_ssim(x32, y32, data_range=1.0)).abs() < 1e-5


@pytest.mark.parametrize("padding", ["valid", "reflect", "zeros"])
def test_zeros_padding_is_zero_padded_valid(padding):
    x, y = correlated_pair((1, 2, 14, 15), torch.float64)
    if padding == "zeros":
        padded = [torch.nn.functional.pad(t, (5, 5, 5, 5)) for t in (x, y)]
        expected = fastssim.ssim(*padded, padding="valid", reduction="none")
        assert (fastssim.ssim(x, y, padding="zeros", reduction="none") - expected).abs().max() < 1e-12
    shape = fastssim.ssim(x, y, padding=padding, reduction="none").shape
    assert shape == ((1, 2, 4, 5) if padding == "valid" else (1, 2, 14, 15))


@pytest.mark.parametrize("padding", ["valid", "reflect", "zeros"])
@pytest.mark.parametrize("components", ["lcs", "l", "c", "s", "cs", "ls", "lc"])
def test_gradcheck_both_inputs(padding, components):
    x, y = correlated_pair((1, 2, 12, 13), torch.float64, seed=3)
    x.requires_grad_()
    y.requires_grad_()
    settings = SSIMSettings(window_size=5, sigma=1.2, padding=padding, components=components)
    # Full Jacobians for the standard SSIM; random projections for the other components.
    assert torch.autograd.gradcheck(lambda a, b: reference.ssim_map(a, b, settings), (x, y),
                                    fast_mode=components != "lcs")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_caches_built_under_inference_mode_serve_double_backward(dtype):
    # The cached taps and conv weights first built under torch.inference_mode (an
    # evaluation loop) must still be savable for backward when training resumes.
    x, y = correlated_pair((1, 2, 14, 15), dtype, seed=8)
    settings = SSIMSettings(window_size=7, sigma=1.37, padding="reflect")  # not cached yet
    with torch.inference_mode():
        reference.ssim_map(x, y, settings)
    x.requires_grad_()
    (grad,) = torch.autograd.grad(reference.ssim_map(x, y, settings).mean(), x, create_graph=True)
    (second,) = torch.autograd.grad(grad.square().sum(), x)
    assert torch.isfinite(second).all() and second.abs().max() > 0


def test_components_product_is_full_ssim():
    x, y = correlated_pair((2, 2, 18, 18), torch.float64)
    kwargs = dict(padding="reflect", reduction="none")
    full = fastssim.ssim(x, y, **kwargs)
    split = [fastssim.ssim(x, y, components=c, **kwargs) for c in ("l", "c", "s")]
    # c*s with C3 = C2/2 is the square-root-free factor up to the 1e-6 C2 sqrt guard.
    assert (full - split[0] * split[1] * split[2]).abs().max() < 1e-5
    assert (full - fastssim.ssim(x, y, components="lcs", **kwargs)).abs().max() == 0


def test_identity_symmetry_and_range():
    x, y = correlated_pair((2, 3, 24, 24), torch.float64)
    for padding in ("valid", "reflect", "zeros"):
        assert torch.allclose(fastssim.ssim(x, x, padding=padding, reduction="none"),
                              torch.ones(1, dtype=torch.float64), atol=1e-12)
        a = fastssim.ssim(x, y, padding=padding, reduction="none")
        assert torch.equal(a, fastssim.ssim(y, x, padding=padding, reduction="none"))
        assert a.min() >= -1 and a.max() <= 1
        assert 0.1 < a.mean() < 0.99
    assert fastssim.ssim(x, -x + 1).item() < 0.5


def test_reductions_are_consistent():
    x, y = correlated_pair((2, 3, 20, 22))
    full = fastssim.ssim(x, y, reduction="none")
    channel = fastssim.ssim(x, y, reduction="channel")
    assert channel.shape == (2, 3)
    assert torch.allclose(channel, full.mean(dim=(-2, -1)))
    assert torch.allclose(fastssim.ssim(x, y, reduction="sample"), channel.mean(dim=1))
    assert torch.allclose(fastssim.ssim(x, y), full.mean())


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-5),
                                       (torch.bfloat16, 1e-5)])
def test_half_inputs_accumulate_in_float32(dtype, tol):
    # Compared with float64 on the same (rounded) values: only fp32 accumulation differs.
    x, y = correlated_pair((2, 3, 19, 23), dtype)
    out = fastssim.ssim(x, y, padding="reflect")
    assert out.dtype == torch.float32
    assert (out - fastssim.ssim(x.double(), y.double(), padding="reflect")).abs() < tol
    xg = x.clone().requires_grad_()
    fastssim.ssim(xg, y).backward()
    assert xg.grad.dtype == dtype


def test_non_contiguous_and_channels_last():
    x, y = correlated_pair((2, 3, 20, 26))
    expected = fastssim.ssim(x, y, padding="reflect", reduction="none")
    cl = fastssim.ssim(x.to(memory_format=torch.channels_last), y.to(memory_format=torch.channels_last),
                       padding="reflect", reduction="none")
    assert torch.allclose(cl, expected, atol=1e-6)
    wide_x, wide_y = correlated_pair((2, 3, 26, 20))
    transposed = fastssim.ssim(wide_x.transpose(-1, -2), wide_y.transpose(-1, -2), padding="reflect")
    contiguous = fastssim.ssim(wide_x.transpose(-1, -2).contiguous(),
                               wide_y.transpose(-1, -2).contiguous(), padding="reflect")
    assert torch.allclose(transposed, contiguous, atol=1e-6)


def test_autocast_keeps_float32_statistics():
    x, y = correlated_pair((1, 2, 20, 20))
    expected = fastssim.ssim(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fastssim.ssim(x, y)
    assert got.dtype == torch.float32
    assert (got - expected).abs() < 1e-6


@pytest.mark.parametrize("offset", [1000.0, -3e4])
@pytest.mark.parametrize("padding", ["valid", "reflect", "zeros"])
def test_offset_does_not_cost_precision(offset, padding):
    # E[x^2] - mu^2 at 1000 with range 1 lost every float32 digit (SSIM 2.89 for 0.891).
    # Oracle: float64 on the same (rounded) float32 values.
    x, y = correlated_pair((2, 2, 24, 27))
    x, y = x + offset, y + offset
    xg = x.clone().requires_grad_()
    got = fastssim.ssim(xg, y, padding=padding, reduction="channel")
    x64 = x.double().requires_grad_()
    expected = fastssim.ssim(x64, y.double(), padding=padding, reduction="channel")
    assert (got - expected).abs().max() < 1e-5
    got.sum().backward()
    expected.sum().backward()
    assert _rel(xg.grad.double(), x64.grad) < 1e-3


def test_shift_keeps_float64_exact_at_any_offset():
    # Contrast-structure is shift-invariant: only the rounding of x + 1e6 may move it.
    x, y = correlated_pair((1, 2, 20, 20), torch.float64)
    base = fastssim.ssim(x, y, reduction="none", padding="reflect", components="cs")
    shifted = fastssim.ssim(x + 1e6, y + 1e6, reduction="none", padding="reflect", components="cs")
    assert (shifted - base).abs().max() < 1e-8


def _non_finite_count(x, y, **kwargs):
    return (~torch.isfinite(fastssim.ssim(x, y, reduction="none", **kwargs))).sum().item()


@pytest.mark.parametrize("padding", ["valid", "zeros"])
def test_non_finite_pixels_stay_local(padding):
    x, y = correlated_pair((1, 1, 40, 40))
    x[0, 0, 25, 12] = float("nan")
    y[0, 0, 12, 27] = float("inf")
    count = _non_finite_count(x, y, padding=padding)
    assert count == _non_finite_count(x.double(), y.double(), padding=padding)
    assert count == 2 * 121  # each poisons exactly the 11x11 windows that contain it
    x[0, 0, 0, 0] = float("nan")  # also the pixel a first-pixel shift would take
    assert _non_finite_count(x, y, padding=padding) == _non_finite_count(x.double(), y.double(), padding=padding)


def test_huge_finite_pixel_stays_finite_where_float64_is():
    x, y = correlated_pair((1, 2, 30, 30))
    x[0, 1, 15, 12] = 1e20  # its square overflows float32
    for padding in ("valid", "reflect", "zeros"):
        got = fastssim.ssim(x, y, reduction="none", padding=padding)
        expected = fastssim.ssim(x.double(), y.double(), reduction="none", padding=padding)
        assert torch.isfinite(expected).all()
        assert torch.isfinite(got).all()
        # Away from the huge pixel the values are unaffected.
        assert (got[:, 0] - expected[:, 0]).abs().max() < 1e-5


@pytest.mark.parametrize("padding", ["valid", "reflect"])
def test_double_backward(padding):
    x, y = correlated_pair((1, 1, 9, 10), torch.float64, seed=5)
    x.requires_grad_()
    y.requires_grad_()
    settings = SSIMSettings(window_size=5, sigma=1.2, padding=padding)
    assert torch.autograd.gradgradcheck(lambda a, b: reference.ssim_map(a, b, settings), (x, y),
                                        fast_mode=True)


def test_sqrt_eps_change_is_as_documented():
    flat = torch.full((1, 1, 16, 16), 0.3, dtype=torch.float64)
    assert abs(fastssim.ssim(flat, flat, components="c").item() - (1 + 2e-6)) < 1e-12
    assert abs(fastssim.ssim(flat, flat, components="s").item() - 1 / (1 + 2e-6)) < 1e-12
    # Float32 too, now that a flat plane's variance is exactly 0 (it was 8.5e-5 off before the shift).
    assert abs(fastssim.ssim(flat.float(), flat.float(), components="c").item() - (1 + 2e-6)) < 1e-7


@pytest.mark.parametrize("padding", ["valid", "reflect", "zeros"])
@pytest.mark.parametrize("components", ["lcs", "cs", "ls"])
def test_float32_stack_matches_float64(padding, components):
    # float32 on the CPU filters a channels-last stack and folds the reflect border by
    # slices; float64 runs the contiguous path. Odd sides, one side at the reflect limit.
    x64, y64 = correlated_pair((3, 5, 13 if padding == "valid" else 6, 19), torch.float64, seed=11)
    settings = SSIMSettings(window_size=11, sigma=1.5, padding=padding, components=components)
    upstream = torch.rand(settings.output_size(*x64.shape[2:]), dtype=torch.float64)
    results = []
    for dtype in (torch.float64, torch.float32):
        x, y = (t.detach().to(dtype).requires_grad_() for t in (x64, y64))
        value = reference.ssim_map(x, y, settings)
        (value * upstream.to(dtype)).sum().backward()
        results.append((value.double(), x.grad.double(), y.grad.double()))
    (v64, dx64, dy64), (v32, dx32, dy32) = results
    assert (v32 - v64).abs().max() < 1e-5
    assert _rel(dx32, dx64) < 1e-4 and _rel(dy32, dy64) < 1e-4


@pytest.mark.parametrize("padding", ["valid", "reflect", "zeros"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_by_row_blocks(monkeypatch, padding, dtype):
    # A forward without gradient filters and combines block by block of output rows; blocks
    # of one and of three rows (the last one short; no minimum) give the one-block result,
    # maps and volumes alike.
    for shape in [(2, 3, 17, 14), (1, 2, 11, 9, 8)]:
        x, y = correlated_pair(shape, dtype, seed=13)
        settings = SSIMSettings(window_size=7, sigma=1.2, padding=padding)
        whole = reference.ssim_map(x, y, settings)
        row_bytes = 4 * whole[:, :, :1].numel() * whole.element_size()
        monkeypatch.setattr(reference, "_MIN_BLOCK_HALOS", 0)
        for rows in (1, 3):
            monkeypatch.setattr(reference, "_BLOCK_BYTES", rows * row_bytes)
            blocks = reference._row_blocks(whole.shape, whole.element_size(), maps=4, halo=6)
            assert len(blocks) == -(-whole.shape[2] // rows)
            by_rows = reference.ssim_map(x, y, settings)
            assert by_rows.shape == whole.shape
            assert (by_rows - whole).abs().max() < (1e-12 if dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize("components", ["lcs", "cs"])
def test_compiles_with_gradient(components):
    # Under torch.compile the backward may not set attributes on the saved state (Dynamo
    # refused the coefficient stack kept there and fell back to a failing path).
    x, y = correlated_pair((2, 3, 20, 21), torch.float32, seed=4)

    def loss(a, b):
        return fastssim.ssim_loss(a, b, padding="reflect", components=components, backend="torch")

    eager_x = x.clone().requires_grad_()
    eager = loss(eager_x, y)
    eager.backward()
    compiled_x = x.clone().requires_grad_()
    compiled = torch.compile(loss, backend="eager")(compiled_x, y)
    compiled.backward()
    assert torch.allclose(compiled, eager, rtol=0, atol=1e-6)
    assert _rel(compiled_x.grad, eager_x.grad) < 1e-5


def test_row_blocks_keep_several_halos():
    # Wide maps with many channels: blocks of at least 4 (k - 1) rows, not one-row blocks
    # that would recompute the window's halo rows many times over.
    blocks = reference._row_blocks((8, 256, 100, 100), 4, maps=4, halo=10)
    assert [b.stop - b.start for b in blocks] == [40, 40, 20]
    # Small outputs stay one block.
    assert reference._row_blocks((2, 16, 64, 64), 4, maps=4, halo=10) == [slice(0, 64)]
