"""``nn.Module`` wrappers: ``SSIMLoss`` and the paper's feature loss ``SSIMDistillLoss``."""
from __future__ import annotations

import numbers
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .functional import ssim_levels, ssim_loss
from .normalize import NORMALIZE_SCOPES
from ._options import BACKENDS, REDUCTIONS, SSIMSettings, check_choice, check_pair

Features = Union[torch.Tensor, Sequence[torch.Tensor], Mapping[str, torch.Tensor]]
Channels = Union[int, Sequence[int], None]


class SSIMLoss(nn.Module):
    r"""SSIM loss :math:`1 - \text{SSIM}(x, y)`, or :math:`(1 - \text{SSIM}) / 2` with ``halve=True``.

    Settings are those of :func:`fastssim.ssim`; ``halve=True, padding="reflect"`` matches
    kornia's ``ssim_loss``.

    Examples:
        >>> loss = SSIMLoss(padding="reflect", halve=True)
        >>> x = torch.rand(1, 2, 12, 12)
        >>> loss(x, x).item()
        0.0
    """

    def __init__(self, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0,
                 k1: float = 0.01, k2: float = 0.03, padding: str = "valid", components: str = "lcs",
                 reduction: str = "mean", halve: bool = False, backend: str = "auto") -> None:
        super().__init__()
        self.settings = SSIMSettings(window_size, sigma, data_range, k1, k2, padding, components)
        check_choice("reduction", reduction, REDUCTIONS)
        check_choice("backend", backend, BACKENDS)
        self.reduction = reduction
        self.halve = halve
        self.backend = backend

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.settings
        return ssim_loss(x, y, halve=self.halve, window_size=s.window_size, sigma=s.sigma,
                         data_range=s.data_range, k1=s.k1, k2=s.k2, padding=s.padding,
                         components=s.components, reduction=self.reduction, backend=self.backend)


class SSIMDistillLoss(nn.Module):
    r"""Structural knowledge-distillation loss over FPN levels (de Rijk et al., NeurIPS 2022).

    .. math::
        L_{feat} = \lambda \sum_l w_l \, \frac{1 - \overline{\text{SSIM}}\big(\psi(\phi_l(S_l)),
        \psi(T_l)\big)}{2}

    where :math:`\overline{\text{SSIM}}` is the mean over the level's channels and pixels
    (the paper's :math:`1/N_r` sum), :math:`\phi_l` an optional 1x1 conv adapter on the
    student, :math:`\psi` min-max normalisation to [0, 1] (so the data range is 1),
    :math:`w_l` the level weights and :math:`\lambda` ``loss_weight``. Defaults are the
    paper's: 11x11 Gaussian window, sigma 1.5, reflect padding, per-level normalisation.
    On CUDA all levels are computed by one Triton launch (forward and backward).

    Args:
        student_channels: channels of the student levels (an int for all, or one per level).
        teacher_channels: channels of the teacher levels; defaults to ``student_channels``.
        num_levels: number of levels, needed to build adapters when channels are ints.
        adapter: build per-level 1x1 conv adapters; ``None`` builds them only when the
            channel counts differ.
        window_size, sigma, k1, k2, padding, components: SSIM settings (see :func:`fastssim.ssim`).
        normalize: min-max scope ``"level"``, ``"sample"``, ``"channel"``, or ``None`` to
            use the features as they are (then set ``data_range``).
        data_range: data range when ``normalize`` is ``None`` (1 after normalisation).
        level_weights: one weight per level (default all 1).
        loss_weight: :math:`\lambda`; the paper finds 2 to 4 best.
        detach_teacher: stop gradients into the teacher features.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Shape:
        - Inputs: a tensor :math:`(N, C, H, W)`, a sequence of them, or a mapping from level
          name to tensor; student and teacher must have the same structure (same keys).
        - Output: scalar; with ``return_levels=True`` also a dict from level name (``"0"``,
          ``"1"``, ... for sequences) to that level's weighted loss.

    Examples:
        >>> kd = SSIMDistillLoss(student_channels=8, teacher_channels=16, num_levels=2)
        >>> student = [torch.rand(2, 8, 16, 16), torch.rand(2, 8, 8, 8)]
        >>> teacher = [torch.rand(2, 16, 16, 16), torch.rand(2, 16, 8, 8)]
        >>> loss, levels = kd(student, teacher, return_levels=True)
        >>> loss.shape, sorted(levels)
        (torch.Size([]), ['0', '1'])
    """

    def __init__(self, student_channels: Channels = None, teacher_channels: Channels = None, *,
                 num_levels: Optional[int] = None, adapter: Optional[bool] = None,
                 window_size: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
                 padding: str = "reflect", components: str = "lcs",
                 normalize: Optional[str] = "level", data_range: float = 1.0,
                 level_weights: Optional[Sequence[float]] = None, loss_weight: float = 1.0,
                 detach_teacher: bool = True, backend: str = "auto") -> None:
        super().__init__()
        self.settings = SSIMSettings(window_size, sigma, 1.0 if normalize else data_range,
                                     k1, k2, padding, components)
        if normalize is not None:
            check_choice("normalize", normalize, NORMALIZE_SCOPES)
        check_choice("backend", backend, BACKENDS)
        if isinstance(loss_weight, bool) or not isinstance(loss_weight, numbers.Real):
            raise TypeError(f"loss_weight must be a real number, got {type(loss_weight).__name__}")
        self.normalize = normalize
        self.loss_weight = float(loss_weight)
        self.level_weights = None if level_weights is None else [float(w) for w in level_weights]
        self.detach_teacher = detach_teacher
        self.backend = backend
        self.adapters = build_adapters(student_channels, teacher_channels, num_levels, adapter)

    def forward(self, student: Features, teacher: Features, return_levels: bool = False):
        names, students, teachers = pair_levels(student, teacher)
        if self.adapters is not None and len(self.adapters) != len(names):
            raise ValueError(f"got {len(names)} levels but the loss has {len(self.adapters)} adapters")
        if self.level_weights is not None and len(self.level_weights) != len(names):
            raise ValueError(f"got {len(names)} levels but {len(self.level_weights)} level_weights")
        xs, ys = [], []
        for i, (name, s, t) in enumerate(zip(names, students, teachers)):
            if self.adapters is not None:
                s = self.adapters[i](s)
            if self.detach_teacher:
                t = t.detach()
            if s.dim() == 4 and t.dim() == 4 and s.shape[1] != t.shape[1]:
                raise ValueError(
                    f"student and teacher channels differ at level {name!r} ({s.shape[1]} vs "
                    f"{t.shape[1]}); pass student_channels and teacher_channels to build 1x1 adapters")
            if isinstance(s, torch.Tensor) and isinstance(t, torch.Tensor) and s.dtype != t.dtype:
                common = torch.promote_types(s.dtype, t.dtype)  # e.g. fp16 student under autocast
                s, t = s.to(common), t.to(common)
            check_pair(s, t, self.settings, name)
            xs.append(s)
            ys.append(t)
        per_channel = ssim_levels(xs, ys, self.settings, per_pixel=False, backend=self.backend,
                                  normalize=self.normalize)
        weights = self.level_weights or [1.0] * len(names)
        levels = {name: w * (1 - ssim_nc.mean()) / 2
                  for name, w, ssim_nc in zip(names, weights, per_channel)}
        total = self.loss_weight * torch.stack(list(levels.values())).sum()
        return (total, levels) if return_levels else total


def pair_levels(student: Features, teacher: Features) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor]]:
    """Level names and aligned student/teacher tensors of a tensor, sequence or mapping of levels.

    Mappings must have the same keys (order from ``student``); sequences are named
    ``"0"``, ``"1"``, ...; a single tensor is level ``"0"``. Raises ``TypeError`` or
    ``ValueError`` when the two structures differ.
    """
    if isinstance(student, Mapping) or isinstance(teacher, Mapping):
        if not (isinstance(student, Mapping) and isinstance(teacher, Mapping)):
            raise TypeError("student and teacher must both be mappings of levels, got "
                            f"{type(student).__name__} and {type(teacher).__name__}")
        if set(student) != set(teacher):
            raise ValueError(f"student and teacher levels differ: student has {list(student)}, "
                             f"teacher has {list(teacher)}")
        names = [str(k) for k in student]
        return names, list(student.values()), [teacher[k] for k in student]
    if isinstance(student, torch.Tensor) or isinstance(teacher, torch.Tensor):
        if not (isinstance(student, torch.Tensor) and isinstance(teacher, torch.Tensor)):
            raise TypeError("student and teacher must both be tensors, got "
                            f"{type(student).__name__} and {type(teacher).__name__}")
        return ["0"], [student], [teacher]
    if not isinstance(student, Sequence) or not isinstance(teacher, Sequence):
        raise TypeError("student and teacher must be tensors, sequences or mappings of tensors, got "
                        f"{type(student).__name__} and {type(teacher).__name__}")
    if len(student) != len(teacher) or not student:
        raise ValueError(f"student and teacher must have the same, non-zero number of levels, got "
                         f"{len(student)} and {len(teacher)}")
    return [str(i) for i in range(len(student))], list(student), list(teacher)


def _per_level(name: str, channels: Channels, num_levels: Optional[int]) -> Optional[list[int]]:
    if channels is None:
        return None
    if isinstance(channels, numbers.Integral) and not isinstance(channels, bool):
        if num_levels is None:
            raise ValueError(f"num_levels is needed when {name} is a single int")
        return [int(channels)] * num_levels
    if not isinstance(channels, Sequence) or not all(
            isinstance(c, numbers.Integral) and not isinstance(c, bool) and c > 0 for c in channels):
        raise TypeError(f"{name} must be a positive int or a sequence of them, got {channels!r}")
    if num_levels is not None and len(channels) != num_levels:
        raise ValueError(f"{name} has {len(channels)} entries but num_levels={num_levels}")
    return [int(c) for c in channels]


def build_adapters(student_channels: Channels, teacher_channels: Channels,
                   num_levels: Optional[int], adapter: Optional[bool]) -> Optional[nn.ModuleList]:
    """Per-level 1x1 convs from student to teacher channels (the paper's phi), or ``None``.

    Built when ``adapter`` is true, or when it is ``None`` and the channels differ;
    ``teacher_channels`` defaults to ``student_channels``.
    """
    if num_levels is not None and (isinstance(num_levels, bool) or not isinstance(num_levels, int)
                                   or num_levels < 1):
        raise ValueError(f"num_levels must be a positive int, got {num_levels!r}")
    student = _per_level("student_channels", student_channels, num_levels)
    teacher = _per_level("teacher_channels", teacher_channels, num_levels) or student
    if student is None:
        if adapter:
            raise ValueError("adapter=True needs student_channels (and teacher_channels if they differ)")
        return None
    if len(student) != len(teacher):
        raise ValueError(f"student_channels has {len(student)} levels, teacher_channels {len(teacher)}")
    differ = student != teacher
    if adapter is False and differ:
        raise ValueError(f"adapter=False but student_channels {student} differ from teacher_channels "
                         f"{teacher}; SSIM needs equal channels")
    if not (adapter or differ):
        return None
    return nn.ModuleList(nn.Conv2d(s, t, kernel_size=1) for s, t in zip(student, teacher))
