"""GPU-only checks: real sizes, the Faster R-CNN FPN set, inductor, 64-bit offsets.

Skipped without CUDA (``pytest -m gpu`` selects them). test_triton.py also runs on CUDA
when one is present. Tolerances as in test_triton.py: float32 SSIM 1e-5 absolute,
gradients 1e-4 relative to the largest reference entry (float64 reference).
"""
import pytest
import torch

import fastssim
from fastssim import SSIMDistillLoss
from fastssim.kernels import ssim as kernels
from conftest import correlated_pair

pytestmark = pytest.mark.gpu

FPN_SIZES = [(200, 336), (100, 168), (50, 84), (25, 42), (13, 21)]  # 800x1344 input


def _relative(a, b):
    return ((a - b).abs().max() / a.abs().max()).item()


@pytest.mark.parametrize("padding", ["valid", "reflect", "zeros"])
@pytest.mark.parametrize("dtype,grad_tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_large_maps(padding, dtype, grad_tol):
    x, y = correlated_pair((4, 16, 257, 311), dtype=dtype, device="cuda")
    grads = {}
    for backend in ("torch", "triton"):
        xb = (x.double() if backend == "torch" else x).detach().requires_grad_()
        out = fastssim.ssim(xb, y.double() if backend == "torch" else y, padding=padding, backend=backend)
        out.backward()
        grads[backend] = (out.double(), xb.grad.double())
    assert (grads["torch"][0] - grads["triton"][0]).abs() < 1e-5
    assert _relative(grads["torch"][1], grads["triton"][1]) < grad_tol


def test_faster_rcnn_fpn_set_matches_float64_reference():
    students = [torch.randn(2, 256, h, w, device="cuda") for h, w in FPN_SIZES]
    teachers = [0.5 * s + torch.randn_like(s) for s in students]
    results = {}
    for backend in ("torch", "triton"):
        inputs = [(s.double() if backend == "torch" else s).detach().requires_grad_() for s in students]
        targets = [t.double() if backend == "torch" else t for t in teachers]
        total, levels = SSIMDistillLoss(backend=backend)(inputs, targets, return_levels=True)
        total.backward()
        results[backend] = (total.double(), levels, [i.grad.double() for i in inputs])
    ref, tri = results["torch"], results["triton"]
    assert (ref[0] - tri[0]).abs() < 1e-5
    for name in ref[1]:
        assert (ref[1][name] - tri[1][name].double()).abs() < 1e-5
    for a, b in zip(ref[2], tri[2]):
        assert _relative(a, b) < 1e-4


def test_inductor_compile_fullgraph():
    x, y = correlated_pair((2, 8, 64, 80), device="cuda")
    step = torch.compile(lambda a, b: SSIMDistillLoss()(a, b), fullgraph=True)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    eager = SSIMDistillLoss()(xa, y)
    eager.backward()
    graph = step(xb, y)
    graph.backward()
    assert (eager - graph).abs() < 1e-6
    assert _relative(xa.grad, xb.grad) < 1e-5


@pytest.mark.slow
def test_more_than_2_31_elements():
    side = 46_400  # 2.15e9 elements, past int32 offsets
    free, _ = torch.cuda.mem_get_info()
    if free < 40e9:
        pytest.skip("needs about 40 GB of free GPU memory")
    x = torch.rand(1, 1, side, side, device="cuda", dtype=torch.float16)
    y = (0.7 * x + 0.3 * torch.rand_like(x)).half()
    ssim_map = fastssim.ssim(x, y, padding="valid", reduction="none", backend="triton")
    # The last rows live beyond 2^31 elements: compare them with the reference on a crop.
    crop = slice(side - 40, side)
    expected = fastssim.ssim(x[..., crop, :].double(), y[..., crop, :].double(), padding="valid",
                             reduction="none", backend="torch")
    assert (ssim_map[..., -30:, :] - expected).abs().max() < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_default_loss_extra_memory(dtype):
    # The lean path keeps D (1x the student, in its dtype) from forward to backward; the
    # persistent grid's scratch is a fixed workspace (reflect padding's, the largest, at
    # window 11); per-tile and per-plane sums and allocator rounding stay below 1%.
    students = [torch.randn(2, 256, h, w, device="cuda", dtype=dtype).requires_grad_() for h, w in FPN_SIZES]
    teachers = [(0.5 * s.detach() + torch.randn_like(s)).to(dtype) for s in students]
    loss_fn = SSIMDistillLoss()
    loss_fn(students, teachers).backward()  # warm-up: compile the kernels
    for s in students:
        s.grad = None
    student_bytes = sum(s.numel() * s.element_size() for s in students)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    loss_fn(students, teachers).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - baseline - student_bytes  # less the gradients
    workspace = 4 * kernels.stream_programs(students[0].device, 2 ** 30, True) * kernels.scratch_floats(
        5, kernels.PADDING_CODES["reflect"], True, True, False)
    assert extra <= 1.01 * student_bytes + workspace, (extra / student_bytes, workspace)


def _fpn_levels(seed, sizes=((96, 128), (48, 64), (24, 32), (12, 16), (7, 8)), channels=8):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    students = [torch.randn(2, channels, h, w, device="cuda", generator=gen) for h, w in sizes]
    teachers = [0.5 * s + torch.randn(s.shape, device="cuda", generator=gen) for s in students]
    return students, teachers


def _eager_step(loss_fn, students, teachers, teacher_grad):
    students = [s.clone().requires_grad_() for s in students]
    teachers = [t.clone().requires_grad_(teacher_grad) for t in teachers]
    loss = loss_fn(students, teachers)
    loss.backward()
    return loss.detach(), [s.grad for s in students], [t.grad for t in teachers if teacher_grad]


@pytest.mark.parametrize("kwargs", [{}, dict(normalize=None, detach_teacher=False)],
                         ids=["default", "shifts-teacher-grad"])
def test_cuda_graph_capture_and_replay(kwargs):
    # Issue #8 point 6: forward and backward captured once, replayed on new data copied into
    # the static inputs, equal to eager runs (the kernels are deterministic: bitwise equal).
    # The default loss is the lean path; without normalisation and with teacher gradients,
    # the per-plane shifts and the backward's gradient kernel are captured too.
    loss_fn = SSIMDistillLoss(backend="triton", **kwargs)
    teacher_grad = not loss_fn.detach_teacher
    students, teachers = _fpn_levels(seed=0)
    static_students = [s.clone().requires_grad_() for s in students]
    static_teachers = [t.clone().requires_grad_(teacher_grad) for t in teachers]
    leaves = static_students + (static_teachers if teacher_grad else [])
    # Warm-up on a side stream (compiles the kernels, caches the Gaussian taps), as
    # torch.cuda.graphs asks before capture.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            for leaf in leaves:
                leaf.grad = None
            loss_fn(static_students, static_teachers).backward()
    torch.cuda.current_stream().wait_stream(side)
    for leaf in leaves:
        leaf.grad = None  # backward allocates the grads from the graph's pool during capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = loss_fn(static_students, static_teachers)
        static_loss.backward()
    for seed in (1, 2):
        students, teachers = _fpn_levels(seed)
        with torch.no_grad():
            for static, new in zip(static_students + static_teachers, students + teachers):
                static.copy_(new)
        graph.replay()
        loss, student_grads, teacher_grads = _eager_step(loss_fn, students, teachers, teacher_grad)
        torch.cuda.synchronize()
        torch.testing.assert_close(static_loss.detach(), loss, rtol=0, atol=0)
        for static, eager in zip(static_students, student_grads):
            torch.testing.assert_close(static.grad, eager, rtol=0, atol=0)
        for static, eager in zip(static_teachers if teacher_grad else [], teacher_grads):
            torch.testing.assert_close(static.grad, eager, rtol=0, atol=0)


def test_compile_reduce_overhead():
    # torch.compile's CUDA graphs (cudagraph trees) record the loss's forward and backward,
    # custom ops included, and replay them on each new batch.
    from torch._dynamo.utils import counters
    loss_fn = SSIMDistillLoss(backend="triton")
    step = torch.compile(lambda s, t: loss_fn(s, t), mode="reduce-overhead", fullgraph=True)
    counters.clear()
    for seed in range(4):  # warm-up, record, then replays
        students, teachers = _fpn_levels(seed)
        torch.compiler.cudagraph_mark_step_begin()
        inputs = [s.clone().requires_grad_() for s in students]
        loss = step(inputs, teachers)
        loss.backward()
        loss, grads = loss.detach().clone(), [i.grad.clone() for i in inputs]
        eager_loss, eager_grads, _ = _eager_step(loss_fn, students, teachers, teacher_grad=False)
        assert (loss - eager_loss).abs() < 1e-6
        for got, expected in zip(grads, eager_grads):
            assert _relative(expected, got) < 1e-5
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])
