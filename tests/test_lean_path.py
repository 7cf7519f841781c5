"""The lean training path of the Triton kernels (issue #8), against the float64 reference.

Under TRITON_INTERPRET=1 (conftest) with small shapes. Tolerances: SSIM values 1e-5
absolute; gradients 1e-4 relative to the largest reference entry for float32 (half
inputs: the reference runs on the same rounded values, gradients are stored in the input
dtype, 2e-3 relative for float16 and 1e-2 for bfloat16).
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import fastssim
from fastssim import SSIMDistillLoss
from fastssim._options import SSIMSettings
from fastssim.functional import ssim_levels
from fastssim.kernels import ssim as kernels
from conftest import correlated_pair

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GRAD_TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def _relative(ref, got):
    return ((ref - got.double()).abs().max() / ref.abs().max()).item()


def _distill(students, teachers, backend, **kwargs):
    """Loss and student gradients of SSIMDistillLoss; the reference runs in float64."""
    cast = (lambda t: t.double()) if backend == "torch" else (lambda t: t)
    inputs = [cast(s).detach().requires_grad_() for s in students]
    loss = SSIMDistillLoss(backend=backend, **kwargs)(inputs, [cast(t) for t in teachers])
    loss.backward()
    return loss.detach().double(), [i.grad for i in inputs]


def _compare_distill(students, teachers, **kwargs):
    ref_loss, ref_grads = _distill(students, teachers, "torch", **kwargs)
    loss, grads = _distill(students, teachers, "triton", **kwargs)
    assert abs(ref_loss - loss).item() < 1e-5
    for s, ref, got in zip(students, ref_grads, grads):
        assert got.dtype == s.dtype and got.shape == s.shape
        assert _relative(ref, got) < GRAD_TOL[s.dtype]


def _levels(sizes, channels=3, dtype=torch.float32, scale=4.0):
    """Student levels spread over [-scale/2, scale/2], teachers in [0, 1]."""
    pairs = [correlated_pair((2, channels, h, w), dtype=torch.float64, seed=i) for i, (h, w) in enumerate(sizes)]
    return ([(scale * p[0] - scale / 2).to(dtype) for p in pairs], [p[1].to(dtype) for p in pairs])


@pytest.mark.parametrize("padding", ["valid", "reflect", "zeros"])
@pytest.mark.parametrize("scope", ["level", "sample", "channel"])
def test_normalisation_scopes(scope, padding):
    students, teachers = _levels([(13, 15), (7, 8)] if padding != "valid" else [(13, 15), (11, 12)])
    _compare_distill(students, teachers, normalize=scope, padding=padding, window_size=7, sigma=1.2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scope", ["level", "channel"])
def test_normalisation_half_precision(dtype, scope):
    students, teachers = _levels([(12, 14), (6, 9)], dtype=dtype)
    _compare_distill(students, teachers, normalize=scope, padding="zeros")


def test_constant_channel_and_exact_ties():
    students, teachers = _levels([(12, 13)])
    s = students[0]
    s[0, 1] = 0.75                 # a constant channel: range below the floor
    s[1, 0, :3, :4] = s[1].max()    # several pixels share the sample's maximum
    s[1, 2, 5:7, 2] = s[1].min()    # and its minimum
    for scope in ("level", "sample", "channel"):
        _compare_distill([s], teachers, normalize=scope, window_size=5, sigma=1.0)


def test_teacher_gradient_with_normalisation():
    students, teachers = _levels([(12, 13)], channels=2)
    results = {}
    for backend in ("torch", "triton"):
        cast = (lambda t: t.double()) if backend == "torch" else (lambda t: t)
        s, t = (cast(v).detach().requires_grad_() for v in (students[0], teachers[0]))
        SSIMDistillLoss(normalize="sample", detach_teacher=False, padding="reflect", window_size=5,
                        backend=backend)(s, t).backward()
        results[backend] = (s.grad, t.grad)
    for ref, got in zip(results["torch"], results["triton"]):
        assert _relative(ref, got) < 1e-4


@pytest.mark.parametrize("scope", [None, "sample"])
def test_map_output_with_normalisation(scope):
    x, y = _levels([(11, 14)], channels=2)
    settings = SSIMSettings(window_size=5, padding="reflect")
    outs = {}
    for backend in ("torch", "triton"):
        cast = (lambda t: t.double()) if backend == "torch" else (lambda t: t)
        xb = cast(x[0]).detach().requires_grad_()
        ssim_map = ssim_levels([xb], [cast(y[0])], settings, per_pixel=True, backend=backend, normalize=scope)[0]
        weights = torch.rand(ssim_map.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        (ssim_map.double() * weights).sum().backward()
        outs[backend] = (ssim_map.double(), xb.grad)
    assert (outs["torch"][0] - outs["triton"][0]).abs().max() < 1e-5
    assert _relative(outs["torch"][1], outs["triton"][1]) < 1e-4


@pytest.mark.parametrize("padding", ["valid", "reflect", "zeros"])
def test_several_row_runs_and_column_strips(monkeypatch, padding):
    # Short runs and a plane wider than one strip exercise the halo rows and columns.
    monkeypatch.setattr(kernels, "ROWS_PER_TILE", 5)
    students, teachers = _levels([(17, kernels.BLOCK_W + 9)], channels=1)
    _compare_distill(students, teachers, normalize="level", padding=padding, window_size=5, sigma=1.0)
    x, y = correlated_pair((1, 1, 17, kernels.BLOCK_W + 9), seed=3)
    for reduction in ("channel", "none"):
        ref = fastssim.ssim(x.double(), y.double(), padding=padding, window_size=5, reduction=reduction,
                            backend="torch")
        got = fastssim.ssim(x, y, padding=padding, window_size=5, reduction=reduction, backend="triton")
        assert (ref - got).abs().max() < 1e-5


def test_reflect_mirror_columns_next_to_a_narrow_last_strip():
    # Window 5, strips of 124 pixel columns: a left border strip, an interior strip (no
    # column fold), a strip owning pixels within r = 2 of the right border that folds their
    # mirror columns itself, and a last strip of one column.
    width = 3 * (kernels.BLOCK_W - 2 * 2) + 1
    students, teachers = _levels([(9, width)], channels=1)
    _compare_distill(students, teachers, normalize="level", padding="reflect", window_size=5, sigma=1.0)


@pytest.mark.parametrize("padding", ["valid", "reflect"])
def test_large_common_offset(padding):
    x, y = correlated_pair((1, 2, 20, 21), seed=13)
    expected = fastssim.ssim(x.double() + 1000, y.double() + 1000, padding=padding, backend="torch")
    xt = (x + 1000).requires_grad_()
    got = fastssim.ssim(xt, y + 1000, padding=padding, backend="triton")
    assert abs(expected.item() - got.item()) < 1e-5
    got.backward()
    xr = (x.double() + 1000).requires_grad_()
    fastssim.ssim(xr, y.double() + 1000, padding=padding, backend="torch").backward()
    assert _relative(xr.grad, xt.grad) < 1e-3  # float32 input at 1000 holds 6e-5 absolute


# The interpreter computes with numpy, which warns on the inf - inf and overflow these
# tests provoke on purpose.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("padding", ["valid", "reflect", "zeros"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixel_stays_local(padding, bad):
    x, y = correlated_pair((1, 1, 50, 50), seed=14)
    x[0, 0, 20, 23] = bad
    ref = fastssim.ssim(x, y, padding=padding, reduction="none", backend="torch")
    got = fastssim.ssim(x, y, padding=padding, reduction="none", backend="triton")
    bad_ref, bad_got = ~torch.isfinite(ref), ~torch.isfinite(got)
    assert bad_got.sum() == bad_ref.sum() > 0
    assert torch.equal(bad_ref, bad_got)
    assert (ref[~bad_ref] - got[~bad_got]).abs().max() < 1e-5


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_huge_finite_pixel_matches_reference():
    x, y = correlated_pair((1, 1, 30, 30), seed=15)
    x[0, 0, 12, 17] = 1e20  # its square overflows float32
    ref = fastssim.ssim(x, y, padding="reflect", reduction="none", backend="torch")
    got = fastssim.ssim(x, y, padding="reflect", reduction="none", backend="triton")
    assert torch.equal(torch.isfinite(ref), torch.isfinite(got)) and torch.isfinite(got).all()
    assert (ref - got).abs().max() < 1e-5


class _Allocations(TorchDispatchMode):
    """Bytes of every tensor torch ops allocate (outputs not aliasing an input)."""

    def __init__(self):
        super().__init__()
        self.records = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.records.append((str(func), t.numel(), t.numel() * t.element_size()))
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_default_loss_allocations(dtype):
    # Wide, short levels: cheap under the interpreter, large next to the fixed small tensors.
    students, teachers = _levels([(8, 120), (6, 60)], channels=1, dtype=dtype)
    inputs = [s.requires_grad_() for s in students]
    loss_fn = SSIMDistillLoss(backend="triton")
    with _Allocations() as allocations:
        loss_fn(inputs, teachers).backward()
    student_bytes = sum(s.numel() * s.element_size() for s in students)
    total = sum(r[2] for r in allocations.records)
    assert total <= 3 * student_bytes, allocations.records
    # Input-sized allocations: D per level in the forward, the gradient in the backward; no
    # normalised copy of the student or the teacher.
    sizes = {s.numel() for s in students}
    full = [r for r in allocations.records if r[1] in sizes]
    assert len(full) == 2 * len(students), full
    assert all(r[0].startswith("fastssim.") for r in full), full


def _gradient_workspace(monkeypatch, height):
    """Bytes ``kernels.ssim_gradient`` allocates beyond the gradient for a (1, 1, height, 20)
    pair in tiles of 2 rows, and the number of tiles."""
    monkeypatch.setattr(kernels, "ROWS_PER_TILE", 2)
    x, y = correlated_pair((1, 1, height, 20), seed=21)
    settings = kernels.KernelSettings(taps=torch.tensor([0.25, 0.5, 0.25]), c1=1e-4, c2=9e-4, sqrt_eps=0.0,
                                      padding=kernels.PADDING_CODES["reflect"], use_l=True, use_c=True,
                                      use_s=True)
    shifts = torch.zeros(1, 1, kernels.NORM_FIELDS)
    with _Allocations() as allocations:
        _, dxs, _, _ = kernels.ssim_gradient([x], [y], settings, True, False, [shifts], False)
    return sum(r[2] for r in allocations.records) - dxs[0].numel() * 4, -(-height // 2)


def test_gradient_workspace_is_fixed(monkeypatch):
    # The persistent grid gives each of at most INTERPRETER_PROGRAMS programs one scratch
    # slot: only the per-tile partial sums (one float32 each here) grow with the input.
    small, small_tiles = _gradient_workspace(monkeypatch, 14)
    large, large_tiles = _gradient_workspace(monkeypatch, 28)
    assert large_tiles > small_tiles > 2 * kernels.INTERPRETER_PROGRAMS
    assert large - small == 4 * (large_tiles - small_tiles)


@pytest.mark.parametrize("upstream, fields, tiles", [(kernels.UPSTREAM_MEAN, 1, 2 ** 31 - 2),
                                                     (kernels.UPSTREAM_PIXEL, 5, 2 ** 31 // 5)])
def test_too_many_tiles_is_a_value_error(upstream, fields, tiles):
    # Tile ids are int32 in the kernel, with a persistent loop's last round running up to
    # P - 1 past the last tile, and partial offsets are tile * fields: refused before any
    # allocation or launch.
    settings = kernels.KernelSettings(taps=torch.tensor([0.25, 0.5, 0.25]), c1=1e-4, c2=9e-4, sqrt_eps=0.0,
                                      padding=kernels.PADDING_CODES["zeros"], use_l=True, use_c=True,
                                      use_s=True)
    with pytest.raises(ValueError, match="split them into several calls"):
        kernels._launch_stream((), [tiles], settings, torch.float32, torch.device("cpu"), fields,
                               NORMALIZE=False, STORE_MAP=False, GRAD=True, UPSTREAM=upstream, NEED_X=True,
                               NEED_Y=False)


def test_results_do_not_depend_on_the_program_count(monkeypatch):
    # Each program of the lean path's persistent launch takes every P-th tile; partial sums
    # are per tile and summed in a fixed order, so the loss and the gradients are
    # bit-identical for any P: one program for all 10 tiles, 3 (the default here, a short
    # last round), or one per tile.
    monkeypatch.setattr(kernels, "ROWS_PER_TILE", 2)
    students, teachers = _levels([(6, 7), (3, 4)], channels=1)

    def run():
        inputs = [s.detach().clone().requires_grad_() for s in students]
        loss = SSIMDistillLoss(backend="triton", window_size=3, sigma=1.0, padding="zeros")(inputs, teachers)
        loss.backward()
        return [loss, *[i.grad for i in inputs]]

    expected = run()
    for programs in (1, 1000):
        monkeypatch.setattr(kernels, "INTERPRETER_PROGRAMS", programs)
        for want, got in zip(expected, run()):
            assert torch.equal(want, got), programs


def test_lean_and_general_paths_agree():
    # The same gradient from the forward-computed D and from the recomputing backward.
    x, y = correlated_pair((1, 2, 15, 16), seed=16)
    grads = []
    for create_general in (False, True):
        xb = x.clone().requires_grad_()
        yb = y.clone().requires_grad_(create_general)  # a teacher gradient forces the general path
        fastssim.ssim(xb, yb, padding="reflect", backend="triton").backward()
        grads.append(xb.grad)
    assert _relative(grads[0].double(), grads[1]) < 1e-5


def test_double_backward_raises_clearly():
    x, y = correlated_pair((1, 1, 12, 12), seed=17)
    xb = x.clone().requires_grad_()
    loss = fastssim.ssim(xb, y, backend="triton")
    with pytest.raises(RuntimeError, match="use backend='torch' for higher-order gradients"):
        torch.autograd.grad(loss, xb, create_graph=True)


def test_mixed_dtype_levels_are_promoted():
    students, teachers = _levels([(12, 12), (8, 8)])
    settings = SSIMSettings(padding="zeros")
    mixed = ssim_levels([students[0], students[1].half()], [teachers[0], teachers[1].half()], settings,
                        per_pixel=False, backend="triton", normalize="level")
    ref = ssim_levels([s.double() for s in (students[0], students[1].half())],
                      [t.double() for t in (teachers[0], teachers[1].half())], settings,
                      per_pixel=False, backend="torch", normalize="level")
    assert all((a - b).abs().max() < 1e-5 for a, b in zip(ref, mixed))


def test_capabilities_drive_dispatch():
    from fastssim._dispatch import resolve_backend
    caps = kernels.CAPABILITIES
    x = torch.rand(1, 1, 8, 8)
    too_wide = SSIMSettings(window_size=2 * caps.max_radius + 3, sigma=3.0)
    assert resolve_backend("auto", x.to(DEVICE), too_wide) == "torch"
    assert set(caps.paddings) == {"valid", "reflect", "zeros"}
