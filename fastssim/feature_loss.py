"""Multi-level feature-distillation losses: one base, several per-level distances.

``loss = loss_weight * sum_l w_l * d(phi_l(S_l), T_l)`` over paired FPN levels, with an
optional 1x1 conv adapter ``phi_l`` per student level. :class:`FeatureDistillLoss` owns
everything but the distance ``d`` (level pairing, binding of adapters and weights to
level names, dtype promotion, input checks); subclasses implement
:meth:`FeatureDistillLoss.level_losses`. :class:`fastssim.SSIMDistillLoss` is the
paper's SSIM distance; :class:`FeatureImitationLoss` the L2/L1 imitation it replaces.
"""
from __future__ import annotations

import math
import numbers
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ._options import check_choice

Features = Union[torch.Tensor, Sequence[torch.Tensor], Mapping[str, torch.Tensor]]
Channels = Union[int, Sequence[int], Mapping[str, int], None]
LevelWeights = Union[Sequence[float], Mapping[str, float], None]


class FeatureDistillLoss(nn.Module):
    r"""Base of the multi-level feature losses: :math:`\lambda \sum_l w_l\, d(\phi_l(S_l), T_l)`.

    Per-level settings (adapters, weights) are bound to level *names*: a mapping of levels
    (e.g. torchvision's FPN ``OrderedDict`` with keys ``'0'``, ..., ``'pool'``) is matched
    key by key, whatever its order; a sequence of levels is named ``'0'``, ``'1'``, ...
    by position (or by ``level_names`` when given); a single tensor is level ``'0'``.

    Args:
        student_channels: channels of the student levels: an int for every level, a
            sequence (one per level, in ``level_names`` order) or a mapping from level
            name to channels.
        teacher_channels: the same for the teacher; defaults to ``student_channels``.
        num_levels: number of levels, needed with int channels unless ``level_names`` is given.
        level_names: names of the levels the adapters and weights bind to (default
            ``'0'``, ``'1'``, ...; taken from the keys when channels or weights are mappings).
        adapter: build per-level 1x1 conv adapters (the paper's :math:`\phi`); ``None``
            builds them only when student and teacher channels differ.
        level_weights: :math:`w_l`, a sequence (in ``level_names`` order) or a mapping from
            level name to weight; finite and non-negative; default 1 for every level.
        loss_weight: :math:`\lambda`, finite and non-negative.
        detach_teacher: stop gradients into the teacher features.
    """

    def __init__(self, student_channels: Channels = None, teacher_channels: Channels = None, *,
                 num_levels: Optional[int] = None, level_names: Optional[Sequence[str]] = None,
                 adapter: Optional[bool] = None, level_weights: LevelWeights = None,
                 loss_weight: float = 1.0, detach_teacher: bool = True) -> None:
        super().__init__()
        for name, value in (("adapter", adapter), ("detach_teacher", detach_teacher)):
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        self.loss_weight = _non_negative_real("loss_weight", loss_weight)
        self.detach_teacher = detach_teacher
        names = _level_names(num_levels, level_names, student_channels, teacher_channels, level_weights)
        self.level_names = names
        self.level_weights = _bind_weights(level_weights, names)
        self.adapters = _build_adapters(_bind_channels("student_channels", student_channels, names),
                                        _bind_channels("teacher_channels", teacher_channels, names),
                                        names, adapter)

    def level_losses(self, names: list[str], students: list[torch.Tensor],
                     teachers: list[torch.Tensor]) -> list[torch.Tensor]:
        """Unweighted scalar loss of each level; the inputs are adapted, detached and promoted."""
        raise NotImplementedError

    def forward(self, student: Features, teacher: Features, return_levels: bool = False):
        r"""The weighted sum over levels.

        Returns:
            The scalar loss; with ``return_levels=True`` also a dict from level name to that
            level's weighted loss :math:`w_l\, d_l` (without ``loss_weight``).
        """
        names, students, teachers = pair_levels(student, teacher)
        bound = self._bind_levels(names, positional=not isinstance(student, Mapping))
        xs, ys = [], []
        for name, key, s, t in zip(names, bound, students, teachers):
            if self.adapters is not None:
                adapter = self.adapters[key]
                if s.dim() != 4 or s.shape[1] != adapter.in_channels:
                    raise ValueError(f"student level {name!r} has shape {tuple(s.shape)}, but its adapter "
                                     f"expects (N, {adapter.in_channels}, H, W); check student_channels")
                s = adapter(s)
            if self.detach_teacher:
                t = t.detach()
            if s.dim() == t.dim() and s.dim() > 1 and s.shape[1] != t.shape[1]:
                raise ValueError(
                    f"student and teacher channels differ at level {name!r} ({s.shape[1]} vs "
                    f"{t.shape[1]}); pass student_channels and teacher_channels to build 1x1 adapters")
            if s.dtype != t.dtype:  # e.g. an fp16 student under autocast and an fp32 teacher
                common = torch.promote_types(s.dtype, t.dtype)
                s, t = s.to(common), t.to(common)
            xs.append(s)
            ys.append(t)
        losses = self.level_losses(names, xs, ys)
        weights = self.level_weights or {}
        levels = {name: weights.get(key, 1.0) * loss for name, key, loss in zip(names, bound, losses)}
        total = self.loss_weight * torch.stack(list(levels.values())).sum()
        return (total, levels) if return_levels else total

    def _bind_levels(self, names: list[str], positional: bool) -> list[str]:
        """The configured level name each input level uses (identity when nothing is bound)."""
        configured = self.level_names
        if configured is None:
            return names
        if positional:
            if len(names) != len(configured):
                raise ValueError(f"got {len(names)} levels but the loss was built for {len(configured)} "
                                 f"levels {configured}")
            return list(configured)
        if set(names) != set(configured):
            raise ValueError(f"got levels {names} but the loss's adapters/level_weights are bound to "
                             f"levels {configured}; pass level_names (or channels/weights as a mapping) "
                             "with the input's level names")
        return names


class FeatureImitationLoss(FeatureDistillLoss):
    """L2 (``"mse"``) or L1 (``"l1"``) feature imitation: per level the mean over all elements.

    The baseline the paper's SSIM loss replaces; same constructor (plus ``distance``) and
    call as :class:`fastssim.SSIMDistillLoss`, so the two are interchangeable. Computed in
    float32 (float64 for float64 input): the squares of fp16 features overflow.

    Examples:
        >>> mse = FeatureImitationLoss(distance="mse", loss_weight=2.0)
        >>> mse([torch.ones(1, 2, 4, 4)], [torch.zeros(1, 2, 4, 4)]).item()
        2.0
    """

    DISTANCES = {"mse": F.mse_loss, "l1": F.l1_loss}

    def __init__(self, student_channels: Channels = None, teacher_channels: Channels = None, *,
                 distance: str = "mse", **kwargs) -> None:
        check_choice("distance", distance, tuple(self.DISTANCES))
        super().__init__(student_channels, teacher_channels, **kwargs)
        self.distance = distance

    def level_losses(self, names, students, teachers):
        distance = self.DISTANCES[self.distance]
        losses = []
        for name, s, t in zip(names, students, teachers):
            if s.shape != t.shape or s.device != t.device:
                raise ValueError(f"student and teacher at level {name!r} must have the same shape and "
                                 f"device, got {tuple(s.shape)} on {s.device} and {tuple(t.shape)} on {t.device}")
            compute = torch.float64 if s.dtype == torch.float64 else torch.float32
            losses.append(distance(s.to(compute), t.to(compute)))
        return losses


def pair_levels(student: Features, teacher: Features) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor]]:
    """Level names and aligned student/teacher tensors of a tensor, sequence or mapping of levels.

    Mappings must have the same keys (order from ``student``); sequences are named
    ``"0"``, ``"1"``, ...; a single tensor is level ``"0"``. Raises ``TypeError`` or
    ``ValueError`` naming the problem when the structures differ or a level is no tensor.
    """
    for role, value in (("student", student), ("teacher", teacher)):
        if isinstance(value, (str, bytes)) or not isinstance(value, (torch.Tensor, Sequence, Mapping)):
            raise TypeError(f"{role} must be a tensor, a sequence or a mapping of (N, C, H, W) tensors, "
                            f"got {type(value).__name__}{_numpy_hint(value)}")
    if isinstance(student, Mapping) or isinstance(teacher, Mapping):
        if not (isinstance(student, Mapping) and isinstance(teacher, Mapping)):
            raise TypeError("student and teacher must both be mappings of levels, got "
                            f"{type(student).__name__} and {type(teacher).__name__}")
        names = [str(k) for k in student]
        if len(set(names)) != len(names) or len({str(k) for k in teacher}) != len(teacher):
            raise ValueError(f"level names must stay distinct as strings, got keys {list(student)} and "
                             f"{list(teacher)}")
        if set(names) != {str(k) for k in teacher}:
            raise ValueError(f"student and teacher levels differ: student has {list(student)}, "
                             f"teacher has {list(teacher)}")
        teacher_by_name = {str(k): v for k, v in teacher.items()}
        students, teachers = list(student.values()), [teacher_by_name[n] for n in names]
    elif isinstance(student, torch.Tensor) or isinstance(teacher, torch.Tensor):
        if not (isinstance(student, torch.Tensor) and isinstance(teacher, torch.Tensor)):
            raise TypeError("student and teacher must both be tensors, got "
                            f"{type(student).__name__} and {type(teacher).__name__}")
        names, students, teachers = ["0"], [student], [teacher]
    else:
        if len(student) != len(teacher):
            raise ValueError(f"student and teacher must have the same, non-zero number of levels, got "
                             f"{len(student)} and {len(teacher)}")
        names, students, teachers = [str(i) for i in range(len(student))], list(student), list(teacher)
    if not names:
        raise ValueError("student and teacher have no levels; pass at least one (N, C, H, W) tensor each")
    for name, s, t in zip(names, students, teachers):
        for role, value in (("student", s), ("teacher", t)):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{role} level {name!r} must be a torch.Tensor, got "
                                f"{type(value).__name__}{_numpy_hint(value)}")
    return names, students, teachers


def _numpy_hint(value: object) -> str:
    return "; convert it with torch.from_numpy" if type(value).__module__ == "numpy" else ""


def _non_negative_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return float(value)


def _level_names(num_levels: Optional[int], level_names: Optional[Sequence[str]],
                 *per_level: object) -> Optional[list[str]]:
    """Names the per-level settings bind to, or ``None`` when no setting is per level."""
    if num_levels is not None and (isinstance(num_levels, bool) or not isinstance(num_levels, numbers.Integral)
                                   or num_levels < 1):
        raise ValueError(f"num_levels must be a positive int, got {num_levels!r}")
    if level_names is not None:
        if isinstance(level_names, str) or not isinstance(level_names, Sequence) or not all(
                isinstance(n, str) and n and "." not in n for n in level_names) or not level_names:
            raise TypeError(f"level_names must be a non-empty sequence of non-empty strings without '.', "
                            f"got {level_names!r}")
        if len(set(level_names)) != len(level_names):
            raise ValueError(f"level_names must be distinct, got {list(level_names)}")
        if num_levels is not None and num_levels != len(level_names):
            raise ValueError(f"num_levels={num_levels} but level_names has {len(level_names)} names")
        names = list(level_names)
    else:
        names = None
    for setting in per_level:
        if isinstance(setting, Mapping):
            keys = [str(k) for k in setting]
            if names is not None and set(keys) != set(names):
                raise ValueError(f"per-level settings name different levels: {keys} and {names}")
            names = names or keys
    if names is None:
        lengths = {len(s) for s in per_level
                   if isinstance(s, Sequence) and not isinstance(s, str)}
        count = num_levels if num_levels is not None else (lengths.pop() if len(lengths) == 1 else None)
        names = None if count is None else [str(i) for i in range(count)]
    return names


def _per_level(name: str, value: object, names: Optional[list[str]], expected: str,
               one_for_all: bool = False) -> dict[str, object]:
    """``{level name: value}`` of a per-level setting given as a mapping, a sequence in
    ``names`` order or, with ``one_for_all``, a single int for every level."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if names is None or len(value) != len(names):
            raise ValueError(f"{name} has {len(value)} entries but the loss has "
                             f"{'no' if names is None else len(names)} levels {names or ''}".rstrip())
        return dict(zip(names, value))
    if one_for_all and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if names is None:
            raise ValueError(f"num_levels (or level_names) is needed when {name} is a single int")
        return dict.fromkeys(names, value)
    raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")


def _bind_channels(name: str, channels: Channels, names: Optional[list[str]]) -> Optional[dict[str, int]]:
    if channels is None:
        return None
    expected = "a positive int, a sequence or a mapping of them"
    values = _per_level(name, channels, names, expected, one_for_all=True)
    for level, count in values.items():
        if isinstance(count, bool) or not isinstance(count, numbers.Integral):
            raise TypeError(f"{name} must be {expected}, got {channels!r}")
        if count < 1:
            raise ValueError(f"{name} must be positive, got {count} for level {level!r}")
    return {level: int(count) for level, count in values.items()}


def _bind_weights(level_weights: LevelWeights, names: Optional[list[str]]) -> Optional[dict[str, float]]:
    if level_weights is None:
        return None
    values = _per_level("level_weights", level_weights, names,
                        "a sequence or a mapping of numbers (one per level)")
    return {level: _non_negative_real(f"level_weights[{level!r}]", w) for level, w in values.items()}


def _build_adapters(student: Optional[dict[str, int]], teacher: Optional[dict[str, int]],
                    names: Optional[list[str]], adapter: Optional[bool]) -> Optional[nn.ModuleDict]:
    """Per-level 1x1 convs from student to teacher channels (the paper's phi), or ``None``.

    Built when ``adapter`` is true, or when it is ``None`` and the channels differ;
    ``teacher`` defaults to ``student``.
    """
    teacher = teacher or student
    if student is None:
        if adapter:
            raise ValueError("adapter=True needs student_channels (and teacher_channels if they differ)")
        return None
    differ = student != teacher
    if adapter is False and differ:
        raise ValueError(f"adapter=False but student_channels {student} differ from teacher_channels "
                         f"{teacher}; SSIM needs equal channels")
    if not (adapter or differ):
        return None
    return nn.ModuleDict({level: nn.Conv2d(student[level], teacher[level], kernel_size=1) for level in names})
