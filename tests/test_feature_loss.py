"""The multi-level feature-loss base: binding of per-level settings, input errors, L1/L2 distances."""
from collections import OrderedDict

import numpy as np
import pytest
import torch

from fastssim import FeatureImitationLoss, SSIMDistillLoss
from conftest import correlated_pair

NAMES = ["0", "1", "pool"]


def _levels(channels=4, seed=0):
    sizes = ((24, 32), (12, 16), (6, 8))
    pairs = [correlated_pair((2, channels, h, w), seed=seed + i) for i, (h, w) in enumerate(sizes)]
    return [3 * s - 1 for s, _ in pairs], [5 * t + 2 for _, t in pairs]


def _as_dict(levels, order=NAMES):
    by_name = dict(zip(NAMES, levels))
    return OrderedDict((name, by_name[name]) for name in order)


@pytest.mark.parametrize("make", [
    lambda: SSIMDistillLoss(level_weights={"0": 1.0, "1": 0.5, "pool": 0.25}, backend="torch"),
    lambda: SSIMDistillLoss(level_names=NAMES, level_weights=[1.0, 0.5, 0.25], backend="torch"),
    lambda: SSIMDistillLoss(student_channels=4, level_names=NAMES, adapter=True, backend="torch"),
    lambda: FeatureImitationLoss(student_channels={"0": 4, "1": 4, "pool": 4}, adapter=True,
                                 level_weights={"pool": 2.0, "0": 1.0, "1": 0.5}),
])
def test_dict_levels_bind_by_key_whatever_the_order(make):
    torch.manual_seed(0)
    kd = make()
    students, teachers = _levels()
    reordered = ["pool", "0", "1"]
    total, levels = kd(_as_dict(students), _as_dict(teachers), return_levels=True)
    total_r, levels_r = kd(_as_dict(students, reordered), _as_dict(teachers, ["1", "pool", "0"]),
                           return_levels=True)
    assert list(levels_r) == reordered
    assert torch.allclose(total, total_r, rtol=1e-6, atol=0)
    for name in NAMES:
        assert torch.equal(levels[name], levels_r[name])


def test_sequences_bind_by_position_to_level_names():
    students, teachers = _levels()
    kd = SSIMDistillLoss(level_names=NAMES, level_weights=[1.0, 0.0, 0.0], backend="torch")
    _, levels = kd(students, teachers, return_levels=True)
    assert list(levels) == ["0", "1", "2"] and levels["1"] == 0 and levels["2"] == 0 and levels["0"] > 0


def test_positional_settings_refuse_differently_named_dict_levels():
    students, teachers = _levels()
    kd = SSIMDistillLoss(level_weights=[1.0, 0.5, 0.25])  # bound to '0', '1', '2'
    with pytest.raises(ValueError, match=r"bound to levels \['0', '1', '2'\]; pass level_names"):
        kd(_as_dict(students), _as_dict(teachers))


def test_keys_colliding_as_strings_are_refused():
    s, t = _levels()[0][0], _levels()[1][0]
    with pytest.raises(ValueError, match="distinct as strings"):
        SSIMDistillLoss()({0: s, "0": s}, {0: t, "0": t})


@pytest.mark.parametrize("student,teacher,error,match", [
    ({}, {}, ValueError, "no levels"),
    ([], [], ValueError, "no levels"),
    (None, None, TypeError, "student must be a tensor, a sequence or a mapping.*NoneType"),
    ("ab", "ab", TypeError, "student must be .*got str"),
    (np.zeros((1, 1, 8, 8), np.float32), np.zeros((1, 1, 8, 8), np.float32), TypeError, "torch.from_numpy"),
    ([np.zeros((1, 1, 8, 8))], [torch.zeros(1, 1, 8, 8)], TypeError, "student level '0'.*ndarray.*from_numpy"),
    ({"p": torch.zeros(1, 1, 8, 8)}, {"p": None}, TypeError, "teacher level 'p' must be a torch.Tensor, got NoneType"),
])
def test_bad_levels_get_clear_errors(student, teacher, error, match):
    with pytest.raises(error, match=match):
        SSIMDistillLoss()(student, teacher)


def test_adapter_with_wrong_input_channels_names_the_level():
    kd = SSIMDistillLoss(student_channels={"0": 4, "pool": 4}, teacher_channels={"0": 8, "pool": 8})
    bad = {"0": torch.rand(1, 4, 16, 16), "pool": torch.rand(1, 5, 16, 16)}
    teacher = {"0": torch.rand(1, 8, 16, 16), "pool": torch.rand(1, 8, 16, 16)}
    with pytest.raises(ValueError, match=r"student level 'pool' has shape \(1, 5, 16, 16\).*\(N, 4, H, W\)"):
        kd(bad, teacher)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(level_weights=2.0), TypeError, "level_weights must be a sequence or a mapping"),
    (dict(level_weights="12"), TypeError, "level_weights must be a sequence or a mapping"),
    (dict(level_weights=[1.0, float("nan")]), ValueError, r"level_weights\['1'\] must be finite"),
    (dict(level_weights=[1.0, -1.0]), ValueError, r"level_weights\['1'\] must be finite and >= 0"),
    (dict(student_channels=-3, num_levels=2), ValueError, "student_channels must be positive, got -3"),
    (dict(student_channels=0, num_levels=2), ValueError, "student_channels must be positive, got 0"),
    (dict(student_channels=[4, True]), TypeError, "student_channels must be a positive int"),
    (dict(loss_weight=-1.0), ValueError, "loss_weight must be finite and >= 0"),
    (dict(loss_weight=float("inf")), ValueError, "loss_weight must be finite and >= 0"),
    (dict(loss_weight="2"), TypeError, "loss_weight must be a real number"),
    (dict(adapter="yes", student_channels=[4]), TypeError, "adapter must be a bool"),
    (dict(detach_teacher="no"), TypeError, "detach_teacher must be a bool"),
    (dict(level_names="0"), TypeError, "level_names must be a non-empty sequence"),
    (dict(level_names=["a.b"]), TypeError, "without '.'"),
    (dict(level_names=["a", "a"]), ValueError, "level_names must be distinct"),
    (dict(level_names=["a", "b"], num_levels=3), ValueError, "num_levels=3 but level_names has 2"),
    (dict(student_channels={"a": 4}, level_weights={"b": 1.0}), ValueError, "name different levels"),
    (dict(normalize=True), ValueError, "normalize=True is ambiguous"),
])
def test_bad_settings_are_refused_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        SSIMDistillLoss(**kwargs)


def test_normalize_false_means_off():
    students, teachers = _levels()
    off = SSIMDistillLoss(normalize=False, data_range=4.0, backend="torch")
    assert off.normalize is None
    assert torch.equal(off(students, teachers),
                       SSIMDistillLoss(normalize=None, data_range=4.0, backend="torch")(students, teachers))


@pytest.mark.parametrize("distance,fn", [("mse", lambda d: d.pow(2).mean()), ("l1", lambda d: d.abs().mean())])
def test_imitation_distances_are_level_means(distance, fn):
    students, teachers = _levels()
    kd = FeatureImitationLoss(distance=distance, loss_weight=3.0, level_weights=[1.0, 2.0, 0.5])
    total, levels = kd(students, teachers, return_levels=True)
    expected = [w * fn(s - t) for w, s, t in zip([1.0, 2.0, 0.5], students, teachers)]
    for name, value in zip(["0", "1", "2"], expected):
        assert torch.allclose(levels[name], value, rtol=1e-6)
    assert torch.allclose(total, 3.0 * sum(expected), rtol=1e-6)


def test_imitation_promotes_half_student_and_checks_shapes():
    s = torch.rand(1, 2, 8, 8)
    kd = FeatureImitationLoss()
    assert torch.allclose(kd(s.half(), s), kd(s.half().float(), s), rtol=0, atol=0)
    with pytest.raises(ValueError, match="level '0' must have the same shape"):
        kd(s, s[..., :4])
    with pytest.raises(ValueError, match="distance must be one of"):
        FeatureImitationLoss(distance="cosine")
