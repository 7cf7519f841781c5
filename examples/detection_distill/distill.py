"""Feature distillation on FPN outputs: the feature losses and the student module that computes them.

``L = L_det + lambda * sum_levels loss(phi(S_l), T_l)`` where ``phi`` is an optional
1x1 conv adapter on the student. ``--kd ssim`` uses :class:`fastssim.SSIMDistillLoss`;
``--kd mse`` / ``--kd l1`` use :class:`fastssim.FeatureImitationLoss`; both share the
library's multi-level base (:class:`fastssim.FeatureDistillLoss`), so the modes differ
only in the per-level distance.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.image_list import ImageList

import fastssim

KD_MODES = ("none", "mse", "l1", "ssim")


def build_feature_loss(
    args: argparse.Namespace, student_channels: Mapping[str, int], teacher_channels: Mapping[str, int]
) -> fastssim.FeatureDistillLoss | None:
    """The KD loss for ``args.kd`` (``None`` for ``"none"``), with ``--kd-weight`` as lambda.

    Channels are keyed by FPN level name, so adapters bind to the levels by name.
    SSIM uses ``backend="auto"``: the PyTorch reference on CPU, the Triton kernels on CUDA.
    """
    if args.kd not in KD_MODES:
        raise ValueError(f"--kd must be one of {KD_MODES}, got {args.kd!r}")
    if args.kd == "none":
        return None
    common = dict(adapter=True if args.kd_adapter else None, loss_weight=args.kd_weight)
    if args.kd == "ssim":
        return fastssim.SSIMDistillLoss(
            dict(student_channels),
            dict(teacher_channels),
            window_size=args.kd_window,
            padding=args.kd_padding,
            normalize=None if args.kd_normalize == "none" else args.kd_normalize,
            backend="auto",
            **common,
        )
    return fastssim.FeatureImitationLoss(dict(student_channels), dict(teacher_channels), distance=args.kd, **common)


def check_same_levels(student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor]) -> None:
    """Raise a ``ValueError`` unless both FPNs have the same level names and (B, H, W) per level.

    Channels may differ (adapters bridge them); names and spatial sizes may not:
    e.g. a MobileNetV3 FPN ('0', '1', 'pool' at strides 32/32/64) cannot be paired
    with a ResNet FPN ('0'..'3', 'pool' at strides 4..64).
    """
    if list(student) != list(teacher):
        raise ValueError(
            f"student FPN levels {list(student)} do not match teacher FPN levels {list(teacher)}; "
            "pick --student/--teacher with the same FPN layout (e.g. two ResNet FPNs)"
        )
    for name in student:
        s, t = student[name].shape, teacher[name].shape
        if (s[0], *s[2:]) != (t[0], *t[2:]):
            raise ValueError(f"FPN level {name!r}: student {tuple(s)} vs teacher {tuple(t)}; the strides differ")


@torch.no_grad()
def probe_levels(
    student: FasterRCNN, teacher: FasterRCNN, image_size: int = 256
) -> tuple[dict[str, int], dict[str, int]]:
    """Run both backbones once on a blank image; check the levels agree and return their channels by level name.

    Run in eval mode so that BatchNorm statistics are left untouched. The size only
    needs to be a multiple of the coarsest stride (64) for level sizes to be exact.
    """
    device = next(student.parameters()).device
    was_training = student.training
    student.eval()
    try:
        blank = torch.zeros(1, 3, image_size, image_size, device=device)
        s_feats, t_feats = student.backbone(blank), teacher.backbone(blank)
    finally:
        student.train(was_training)
    check_same_levels(s_feats, t_feats)
    return {k: f.shape[1] for k, f in s_feats.items()}, {k: f.shape[1] for k, f in t_feats.items()}


class DistillationStudent(nn.Module):
    """The student detector and the KD loss (with its adapters) as one module, so DDP syncs all their gradients.

    ``forward`` takes the batch already transformed by ``detector.transform`` and
    the teacher's FPN features of that same batch, runs the student backbone
    once, and computes the detection losses from those features (backbone under
    the caller's autocast, RPN and RoI heads in fp32).
    """

    def __init__(self, detector: FasterRCNN, feature_loss: nn.Module | None) -> None:
        super().__init__()
        self.detector = detector
        self.feature_loss = feature_loss

    def forward(
        self,
        images: ImageList,
        targets: list[dict[str, torch.Tensor]],
        teacher_features: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Return ``(losses, kd_levels)``: losses to sum (``loss_kd`` included) and per-level KD terms to log."""
        det = self.detector
        features = det.backbone(images.tensors)
        # The heads run in fp32 even under autocast: torchvision decodes boxes in the dtype of
        # the regression outputs, and bf16 would round coordinates to several pixels.
        with torch.autocast(images.tensors.device.type, enabled=False):
            head_features = OrderedDict((k, v.float()) for k, v in features.items())
            proposals, rpn_losses = det.rpn(images, head_features, targets)
            _, roi_losses = det.roi_heads(head_features, proposals, images.image_sizes, targets)
        losses = {**rpn_losses, **roi_losses}
        if self.feature_loss is None:
            return losses, {}
        if teacher_features is None:
            raise ValueError("teacher_features are required when a feature loss is set")
        check_same_levels(features, teacher_features)
        losses["loss_kd"], kd_levels = self.feature_loss(features, teacher_features, return_levels=True)
        return losses, kd_levels


def distill_forward(
    model: nn.Module,
    teacher: FasterRCNN | None,
    images: Sequence[torch.Tensor],
    targets: Sequence[dict[str, torch.Tensor]],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One training forward: transform once, teacher features under ``no_grad``, then the student.

    ``model`` is a :class:`DistillationStudent`, possibly wrapped in DDP. The
    transform has no parameters, so it runs outside DDP on the unwrapped module.
    """
    student: DistillationStudent = getattr(model, "module", model)
    image_list, targets = student.detector.transform(list(images), list(targets))
    teacher_features = None
    if teacher is not None:
        with torch.no_grad():
            teacher_features = teacher.backbone(image_list.tensors)
    return model(image_list, targets, teacher_features)
