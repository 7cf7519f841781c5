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


def smallest_batch(detector: FasterRCNN, image_sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """The smallest padded batch ``detector.transform`` makes from these ``(height, width)`` image sizes.

    It comes from the most elongated image: resizing keeps the shorter side at
    ``min_size`` unless the longer one would pass ``max_size``, so that image has
    the shortest side after resizing (and every batch that holds it is at least as
    large, being padded to its largest image).

    Returns:
        A blank ``(1, 3, H, W)`` batch, as the backbone receives it.
    """
    height, width = max(image_sizes, key=lambda hw: max(hw) / min(hw))
    was_training = detector.transform.training
    detector.transform.eval()  # eval: no random choice among several min sizes
    try:
        images, _ = detector.transform([torch.zeros(3, height, width, device=next(detector.parameters()).device)])
    finally:
        detector.transform.train(was_training)
    return images.tensors


@torch.no_grad()
def probe_features(
    student: FasterRCNN, teacher: FasterRCNN, batch: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Both backbones' FPN features of ``batch``, checked to pair up level by level (see :func:`check_same_levels`).

    The student runs in eval mode so that its BatchNorm statistics are left untouched.
    """
    was_training = student.training
    student.eval()
    try:
        student_features, teacher_features = student.backbone(batch), teacher.backbone(batch)
    finally:
        student.train(was_training)
    check_same_levels(student_features, teacher_features)
    return student_features, teacher_features


@torch.no_grad()
def check_feature_loss_fits(
    feature_loss: nn.Module,
    student_features: Mapping[str, torch.Tensor],
    teacher_features: Mapping[str, torch.Tensor],
    args: argparse.Namespace,
) -> None:
    """Run ``feature_loss`` once, so that a level too small for the SSIM window stops a run before it trains.

    Raises:
        ValueError: the library's message (level, size) followed by the command-line
            flags that fix it.
    """
    try:
        feature_loss(student_features, teacher_features)
    except ValueError as e:
        raise ValueError(
            f"--kd {args.kd} --kd-window {args.kd_window} --kd-padding {args.kd_padding}: {e}. "
            f"On the command line: --kd-padding zeros, a smaller --kd-window, or a larger --min-size (now {args.min_size})"
        ) from e


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
