"""``nn.Module`` wrappers: ``SSIMLoss`` and the paper's feature loss ``SSIMDistillLoss``."""
from __future__ import annotations

from typing import Union

import torch
from torch import nn

from .feature_loss import Channels, FeatureDistillLoss
from .functional import ssim_levels, ssim_loss
from .normalize import NORMALIZE_SCOPES
from ._options import BACKENDS, REDUCTIONS, SSIMSettings, check_bool, check_choice, check_pair


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
        check_bool("halve", halve)
        self.halve = halve
        self.backend = backend

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.settings
        return ssim_loss(x, y, halve=self.halve, window_size=s.window_size, sigma=s.sigma,
                         data_range=s.data_range, k1=s.k1, k2=s.k2, padding=s.padding,
                         components=s.components, reduction=self.reduction, backend=self.backend)


class SSIMDistillLoss(FeatureDistillLoss):
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
        student_channels, teacher_channels, num_levels, level_names, adapter, level_weights,
            loss_weight, detach_teacher: the levels, adapters and weights, as in
            :class:`fastssim.FeatureDistillLoss` (settings bind to level names, so a dict of
            levels is matched by key).
        window_size, sigma, k1, k2, padding, components: SSIM settings (see :func:`fastssim.ssim`).
        normalize: min-max scope ``"level"``, ``"sample"``, ``"channel"`` (see
            :func:`fastssim.min_max_normalize`), or ``None``/``False`` to use the features as
            they are (then set ``data_range``).
        data_range: data range when ``normalize`` is off (1 after normalisation).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Shape:
        - Inputs: a tensor :math:`(N, C, H, W)`, a sequence of them, or a mapping from level
          name to tensor; student and teacher must have the same structure (same keys).
        - Output: scalar; with ``return_levels=True`` also a dict from level name (``"0"``,
          ``"1"``, ... for sequences) to that level's weighted loss (without ``loss_weight``).

    Examples:
        >>> kd = SSIMDistillLoss(student_channels=8, teacher_channels=16, num_levels=2)
        >>> student = [torch.rand(2, 8, 16, 16), torch.rand(2, 8, 8, 8)]
        >>> teacher = [torch.rand(2, 16, 16, 16), torch.rand(2, 16, 8, 8)]
        >>> loss, levels = kd(student, teacher, return_levels=True)
        >>> loss.shape, sorted(levels)
        (torch.Size([]), ['0', '1'])
    """

    def __init__(self, student_channels: Channels = None, teacher_channels: Channels = None, *,
                 window_size: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
                 padding: str = "reflect", components: str = "lcs",
                 normalize: Union[str, None, bool] = "level", data_range: float = 1.0,
                 backend: str = "auto", **level_kwargs) -> None:
        super().__init__(student_channels, teacher_channels, **level_kwargs)
        if normalize is False:
            normalize = None
        if normalize is not None:
            if normalize is True:
                raise ValueError("normalize=True is ambiguous; pass a min-max scope: 'level' (the "
                                 "paper's), 'sample' or 'channel', or None to use the features as they are")
            check_choice("normalize", normalize, NORMALIZE_SCOPES)
        self.settings = SSIMSettings(window_size, sigma, 1.0 if normalize else data_range,
                                     k1, k2, padding, components)
        check_choice("backend", backend, BACKENDS)
        self.normalize = normalize
        self.backend = backend

    def level_losses(self, names, students, teachers):
        for name, s, t in zip(names, students, teachers):
            check_pair(s, t, self.settings, name)
        # Raw levels: normalisation happens inside (at load time on the Triton kernels).
        per_channel = ssim_levels(students, teachers, self.settings, per_pixel=False,
                                  backend=self.backend, normalize=self.normalize)
        return [(1 - ssim_nc.mean()) / 2 for ssim_nc in per_channel]
