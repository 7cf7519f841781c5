"""SSIMLoss, SSIMDistillLoss and min-max normalisation (reference backend)."""
import doctest
from collections import OrderedDict

import kornia
import pytest
import torch

import fastssim
from fastssim import SSIMDistillLoss, SSIMLoss, min_max_normalize
from conftest import correlated_pair


def _fpn(channels=4, batch=2, sizes=((24, 32), (12, 16), (6, 8)), seed=0, dtype=torch.float32):
    """Student/teacher-like FPN level lists (teacher features on another scale)."""
    pairs = [correlated_pair((batch, channels, h, w), dtype, seed=seed + i) for i, (h, w) in enumerate(sizes)]
    return [3 * s - 1 for s, _ in pairs], [5 * t + 2 for _, t in pairs]


@pytest.mark.parametrize("module", ["fastssim.functional", "fastssim.modules", "fastssim.normalize"])
def test_docstring_examples_run(module):
    import importlib
    result = doctest.testmod(importlib.import_module(module), extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0


def test_ssim_loss_module_matches_functional_and_kornia():
    x, y = correlated_pair((2, 3, 20, 21))
    loss = SSIMLoss(padding="reflect", halve=True)
    assert loss(x, y) == fastssim.ssim_loss(x, y, padding="reflect", halve=True)
    assert (loss(x, y) - kornia.losses.ssim_loss(x, y, 11)).abs() < 1e-5
    assert (SSIMLoss()(x, y) - (1 - fastssim.ssim(x, y))).abs() < 1e-7
    assert SSIMLoss(reduction="channel")(x, y).shape == (2, 3)


def test_distill_loss_is_the_paper_formula():
    students, teachers = _fpn()
    kd = SSIMDistillLoss(loss_weight=2.0, level_weights=[1.0, 0.5, 0.25], backend="torch")
    total, levels = kd(students, teachers, return_levels=True)
    expected = {}
    for i, (s, t) in enumerate(zip(students, teachers)):
        s, t = min_max_normalize(s), min_max_normalize(t)
        expected[str(i)] = [1.0, 0.5, 0.25][i] * fastssim.ssim_loss(s, t, padding="reflect", halve=True)
    for name, value in expected.items():
        assert (levels[name] - value).abs() < 1e-6
    assert (total - 2.0 * sum(expected.values())).abs() < 1e-6


def test_distill_accepts_tensor_list_and_dict():
    students, teachers = _fpn()
    kd = SSIMDistillLoss()
    as_list = kd(students, teachers)
    names = ["0", "1", "pool"]
    as_dict = kd(OrderedDict(zip(names, students)), dict(zip(reversed(names), reversed(teachers))))
    assert torch.equal(as_list, as_dict)
    _, levels = kd(OrderedDict(zip(names, students)), OrderedDict(zip(names, teachers)), return_levels=True)
    assert list(levels) == names
    single = kd(students[0], teachers[0])
    assert torch.equal(single, kd([students[0]], [teachers[0]]))


def test_teacher_is_detached_and_student_gets_gradient():
    students, teachers = _fpn()
    students = [s.requires_grad_() for s in students]
    teachers = [t.requires_grad_() for t in teachers]
    SSIMDistillLoss()(students, teachers).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in students)
    assert all(t.grad is None for t in teachers)
    SSIMDistillLoss(detach_teacher=False)(students, teachers).backward()
    assert all(t.grad is not None for t in teachers)


def test_adapters_map_student_channels():
    students, _ = _fpn(channels=3)
    _, teachers = _fpn(channels=6)
    kd = SSIMDistillLoss(student_channels=3, teacher_channels=6, num_levels=3)
    assert len(kd.adapters) == 3 and kd.adapters["0"].weight.shape == (6, 3, 1, 1)
    kd(students, teachers).backward()
    assert kd.adapters["2"].weight.grad is not None
    forced = SSIMDistillLoss(student_channels=[4, 4], adapter=True)
    assert forced.adapters["1"].weight.shape == (4, 4, 1, 1)
    assert SSIMDistillLoss(student_channels=4, teacher_channels=4, num_levels=2).adapters is None


@pytest.mark.parametrize("scope", ["level", "sample", "channel"])
def test_min_max_normalize_scopes_and_gradient(scope):
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64) * 4 + 1
    out = min_max_normalize(x, scope)
    dims = {"level": (0, 1, 2, 3), "sample": (1, 2, 3), "channel": (2, 3)}[scope]
    assert torch.allclose(out.amin(dim=dims), torch.zeros(1, dtype=torch.float64))
    assert torch.allclose(out.amax(dim=dims), torch.ones(1, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda t: min_max_normalize(t, scope), (x.requires_grad_(),))


def test_min_max_normalize_constant_map_is_zero_not_nan():
    out = min_max_normalize(torch.full((1, 2, 3, 3), 7.0), "channel")
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("scope", ["level", "sample", "channel"])
@pytest.mark.parametrize("spread", [0.0, 1e-9, 1e-6, 1e-3, 2e-2])
def test_degenerate_student_level_gets_bounded_gradient(scope, spread):
    # A dead (constant or near-constant) student level: before the range floor the
    # gradient was about 1e8 for an all-zero map and grew as 1 / spread.
    torch.manual_seed(0)
    student = (spread * torch.rand(2, 4, 16, 16)).requires_grad_()
    SSIMDistillLoss(normalize=scope, backend="torch")(student, torch.randn(2, 4, 16, 16)).backward()
    assert torch.isfinite(student.grad).all()
    # At most 1/RANGE_FLOOR times the gradient w.r.t. the normalised map: about 11 at
    # worst on this case (the min's share lands on one pixel).
    assert student.grad.abs().max() < 20.0


def test_constant_channel_gets_bounded_gradient_with_channel_scope():
    torch.manual_seed(0)
    student = torch.randn(1, 4, 16, 16)
    student[0, 2] = 0.5  # one dead channel
    student.requires_grad_()
    SSIMDistillLoss(normalize="channel", backend="torch")(student, torch.randn(1, 4, 16, 16)).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().max() < 10.0


def test_distill_normalize_none_uses_data_range_and_promotes_dtypes():
    students, teachers = _fpn(sizes=((16, 16),))
    s, t = students[0].half(), teachers[0]
    kd = SSIMDistillLoss(normalize=None, data_range=10.0)
    expected = (1 - fastssim.ssim(s.float(), t, data_range=10.0, padding="reflect")) / 2
    assert (kd(s, t) - expected).abs() < 1e-6
    # Normalised (default): an fp16 student and fp32 teacher, as under autocast.
    assert (SSIMDistillLoss()(s, t) - SSIMDistillLoss()(s.float(), t)).abs() < 1e-6


def test_distill_errors_name_the_problem():
    students, teachers = _fpn()
    kd = SSIMDistillLoss()
    with pytest.raises(ValueError, match="levels differ"):
        kd({"0": students[0]}, {"1": teachers[0]})
    with pytest.raises(TypeError, match="both be mappings"):
        kd({"0": students[0]}, [teachers[0]])
    with pytest.raises(ValueError, match="same, non-zero number of levels"):
        kd(students, teachers[:2])
    with pytest.raises(ValueError, match="channels differ at level '1'"):
        kd(students, [teachers[0], teachers[1][:, :2], teachers[2]])
    tiny = [torch.rand(2, 4, 3, 3)]
    with pytest.raises(ValueError, match=r"level 'pool'.*3x3.*padding='zeros'"):
        kd({"pool": tiny[0]}, {"pool": tiny[0]})
    with pytest.raises(ValueError, match=r"3 levels but the loss was built for 2 levels \['0', '1'\]"):
        SSIMDistillLoss(level_weights=[1, 1])(students, teachers)
    with pytest.raises(ValueError, match="3 levels but the loss was built for 2 levels"):
        SSIMDistillLoss(student_channels=[4, 4], adapter=True)(students, teachers)
    with pytest.raises(ValueError, match=r"num_levels \(or level_names\) is needed"):
        SSIMDistillLoss(student_channels=4, teacher_channels=8)
    with pytest.raises(ValueError, match="adapter=False"):
        SSIMDistillLoss(student_channels=[4], teacher_channels=[8], adapter=False)
    with pytest.raises(ValueError, match="student_channels must be positive, got 0 for level '1'"):
        SSIMDistillLoss(student_channels=[4, 0])
