"""Launches safe for CUDA graph capture (issue #8 point 6), checked without a GPU.

A captured graph (``torch.cuda.graphs``, ``torch.compile(mode="reduce-overhead")``) replays
device work only: a tensor built from host Python data and copied to the device on every
call, or a device value read on the host (``.item()``, ``nonzero``, a data-dependent
shape), either fails during capture or is frozen at its captured value. The profiler
records every aten op, also those inside the custom ops (a ``TorchDispatchMode`` does not
see inside them), so a forward and backward after a warm-up must record none of those.
On CUDA the device activities are checked too: no host<->device copy at all. The
capture and replay themselves are in tests/test_gpu.py.
"""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from fastssim import SSIMDistillLoss
from fastssim._options import SSIMSettings
from fastssim.functional import ssim_levels
from fastssim.kernels import ssim as kernels
from conftest import correlated_pair

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Ops that build a tensor from host Python data (torch.tensor, torch.as_tensor of a list)
# or read device data on the host (.item(), bool(t), data-dependent output shapes).
HOST_OPS = {"aten::lift_fresh", "aten::lift_fresh_copy", "aten::_local_scalar_dense",
            "aten::nonzero", "aten::masked_select", "aten::_pin_memory"}

SETTINGS = dict(window_size=3, sigma=1.0)


def _levels(requires_grad_teacher=False):
    """Three small levels on the device, built before the profiled calls."""
    sizes = [(6, 7), (5, 5), (4, 4)]
    pairs = [correlated_pair((1, 2, h, w), seed=i, device=DEVICE) for i, (h, w) in enumerate(sizes)]
    students = [(4 * s - 2).requires_grad_() for s, _ in pairs]
    teachers = [t.requires_grad_(requires_grad_teacher) for _, t in pairs]
    return students, teachers


def _default_loss():
    # The paper's loss (normalize="level"): the lean path, D computed by the forward launch.
    loss, (students, teachers) = SSIMDistillLoss(backend="triton", **SETTINGS), _levels()
    return lambda: loss(students, teachers).backward()


def _general_path():
    # No normalisation (per-plane shifts), teacher gradients: the backward launches the
    # gradient kernel with a per-plane upstream gradient.
    loss = SSIMDistillLoss(backend="triton", normalize=None, detach_teacher=False, **SETTINGS)
    students, teachers = _levels(requires_grad_teacher=True)
    return lambda: loss(students, teachers).backward()


def _maps():
    # SSIM maps (STORE_MAP) and the backward with a per-pixel upstream gradient.
    settings, (students, teachers) = SSIMSettings(padding="zeros", **SETTINGS), _levels()

    def step():
        maps = ssim_levels(students, teachers, settings, per_pixel=True, backend="triton")
        sum((m * m).sum() for m in maps).backward()
    return step


@pytest.mark.parametrize("case", [_default_loss, _general_path, _maps], ids=lambda f: f.__name__[1:])
def test_no_host_data_per_call(case):
    step = case()
    step()  # warm-up: compiles the kernels on a GPU, caches the Gaussian taps on the device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
    names = [event.name for event in prof.events()]
    assert "fastssim::ssim_levels" in names and "fastssim::ssim_levels_backward" in names
    assert not HOST_OPS.intersection(names), sorted(HOST_OPS.intersection(names))
    copies = [name for name in names if "HtoD" in name or "DtoH" in name]
    assert not copies, copies


def test_compiled_graph_builds_nothing_on_the_host():
    # torch.compile traces through fastssim's Python: the graph it hands to the backend
    # (inductor, CUDA graphs with mode="reduce-overhead") must take the Gaussian taps as a
    # constant, not build them from host values and copy them on every call.
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    loss_fn = SSIMDistillLoss(backend="triton", **SETTINGS)
    step = torch.compile(lambda s, t: loss_fn(s, t), backend=record, fullgraph=True)
    students, teachers = _levels()
    step(students, teachers)
    assert len(graphs) == 1
    nodes = list(graphs[0].graph.nodes)
    assert any(node.target is torch.ops.fastssim.ssim_levels.default or
               node.target is torch.ops.fastssim.ssim_levels for node in nodes)
    factories = [node.format_node() for node in nodes
                 if node.target in (torch.arange, torch.tensor, torch.as_tensor)
                 or (node.target == "to" and ("device" in node.kwargs or any(
                     isinstance(a, (torch.device, str)) for a in node.args[1:])))]
    assert not factories, factories


def test_level_arguments_compile_one_variant_for_all_sizes():
    # Triton specialises each integer in a tuple argument: 1 becomes a constant, multiples
    # of 16 get an alignment hint, small values are int32. The level fields must look alike
    # to it whatever the sizes, strides and addresses (0 for absent tensors), or every new
    # set of FPN sizes would compile the kernel again.
    maps = [torch.empty(1), None]
    xs = [torch.empty(2, 16, 32, 48), torch.empty(1, 1, 7, 1)[..., :1]]
    levels, counts = kernels._level_args(xs, xs, [(32, 48), (7, 1)], True, 5, maps=maps)
    assert counts == [2 * 16, 1] and len(levels) == 2
    values = [v for level in levels for v in level]
    assert len(values) == 2 * kernels.NUM_FIELDS
    assert all(v >= 2 ** 31 and v % 16 for v in values)
    decoded = [(v - kernels._OPAQUE_BIAS) >> 4 for v in levels[1]]
    assert decoded[kernels.F_MAP.value] == 0 and decoded[kernels.F_SXW.value] == 1
    assert decoded[kernels.F_START.value] == 2 * 16


def test_program_coordinates_divide_exactly():
    # The kernels split a program id by multiply and shift (no integer division, which cost
    # a stack frame): exact for every id below 2**31, the grid's limit. Divisors 1..4096,
    # powers of two and their neighbours, and large ones; dividends at the edges of each
    # quotient step and at the limit.
    gen = torch.Generator().manual_seed(0)
    divisors = list(range(1, 4097)) + [2 ** k + e for k in range(12, 31) for e in (-1, 0, 1)] + \
        torch.randint(4097, 2 ** 31 - 1, (200,), generator=gen).tolist()
    limit = 2 ** 31 - 1
    for d in divisors:
        multiplier, shift = kernels._magic_divisor(d)
        assert multiplier * limit < 2 ** 63  # the product fits int64
        q = limit // d
        values = {0, 1, d - 1, d, min(limit, d + 1), limit, q * d, q * d - 1, max(0, (q - 1) * d + 1)}
        values |= set(torch.randint(0, limit, (16,), generator=gen).tolist())
        for v in values:
            assert (v * multiplier) >> shift == v // d, (v, d)
