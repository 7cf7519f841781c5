"""Faster R-CNN detectors from torchvision, built by name with weights only from local files.

torchvision's own builders fetch pretrained weights from the hub; here every
model is assembled from torchvision's parts with ``weights=None`` and weights are
loaded from files the user downloaded beforehand (``--teacher-weights``,
``--student-weights``, ``--backbone-weights``). The module structure is exactly
torchvision's, so its COCO checkpoints (e.g.
``torchvision.models.detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1.url``)
load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, resnet18, resnet34, resnet50, resnet101
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, RPNHead
from torchvision.ops.misc import FrozenBatchNorm2d

# Keys of a state dict that belong to the classifier, not to the detection backbone.
_CLASSIFIER_PREFIXES = ("fc.", "classifier.")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a local file: a bare state dict or one of our checkpoints (key ``"model"``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (or a checkpoint with a 'model' entry), got {type(state).__name__}")
    return state


def num_classes_in(state: dict[str, torch.Tensor]) -> int:
    """Number of classes (background included) of a Faster R-CNN state dict."""
    key = "roi_heads.box_predictor.cls_score.weight"
    if key not in state:
        raise ValueError(f"not a Faster R-CNN state dict: no {key!r}")
    return int(state[key].shape[0])


def _load_backbone(backbone: nn.Module, path: str | Path | None) -> None:
    """Load ImageNet classifier weights into ``backbone``, ignoring only the classifier head."""
    if path is None:
        return
    state = {k: v for k, v in load_state_dict_file(path).items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    backbone_keys = {k for k in backbone.state_dict() if not k.startswith(_CLASSIFIER_PREFIXES)}
    # FrozenBatchNorm2d drops num_batches_tracked on load, so that key may be absent on either side.
    missing = sorted(k for k in backbone_keys - state.keys() if not k.endswith("num_batches_tracked"))
    if missing:
        raise ValueError(f"--backbone-weights {path}: missing {len(missing)} keys, e.g. {missing[:3]}; wrong architecture?")
    backbone.load_state_dict(state, strict=False)


def _trainable_layers(pretrained: bool, requested: int | None, max_value: int, default: int) -> int:
    """torchvision's rule: a randomly initialised backbone trains all layers, a pretrained one ``default``."""
    if requested is None:
        return default if pretrained else max_value
    if not 0 <= requested <= max_value:
        raise ValueError(f"--trainable-backbone-layers must be in [0, {max_value}] for this backbone, got {requested}")
    return requested


def _resnet_fpn(
    resnet: Callable[..., nn.Module], v2: bool = False
) -> Callable[..., FasterRCNN]:
    """Builder for a ResNet-FPN Faster R-CNN (torchvision's v1 layout, or v2 with BatchNorm heads)."""

    def build(num_classes: int, pretrained: bool, backbone_weights: str | None, trainable_layers: int | None, **kwargs: Any) -> FasterRCNN:
        # Frozen BN for pretrained backbones (tiny per-GPU batches), as torchvision; v2 always uses BatchNorm2d.
        norm_layer = nn.BatchNorm2d if v2 or not pretrained else FrozenBatchNorm2d
        body = resnet(weights=None, norm_layer=norm_layer)
        _load_backbone(body, backbone_weights)
        layers = _trainable_layers(pretrained, trainable_layers, 5, 3)
        if not v2:
            return FasterRCNN(_resnet_fpn_extractor(body, layers), num_classes=num_classes, **kwargs)
        backbone = _resnet_fpn_extractor(body, layers, norm_layer=nn.BatchNorm2d)
        anchor_generator = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
        rpn_head = RPNHead(backbone.out_channels, anchor_generator.num_anchors_per_location()[0], conv_depth=2)
        box_head = FastRCNNConvFCHead((backbone.out_channels, 7, 7), [256] * 4, [1024], norm_layer=nn.BatchNorm2d)
        return FasterRCNN(
            backbone, num_classes=num_classes, rpn_anchor_generator=anchor_generator, rpn_head=rpn_head, box_head=box_head, **kwargs
        )

    return build


def _mobilenet_v3_large_fpn(
    num_classes: int, pretrained: bool, backbone_weights: str | None, trainable_layers: int | None, **kwargs: Any
) -> FasterRCNN:
    """torchvision's ``fasterrcnn_mobilenet_v3_large_fpn``: three FPN levels ('0', '1', 'pool'), strides 32/32/64."""
    body = mobilenet_v3_large(weights=None, norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d)
    _load_backbone(body, backbone_weights)
    backbone = _mobilenet_extractor(body, True, _trainable_layers(pretrained, trainable_layers, 6, 3))
    anchor_sizes = ((32, 64, 128, 256, 512),) * 3
    anchor_generator = AnchorGenerator(anchor_sizes, ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    return FasterRCNN(
        backbone, num_classes=num_classes, rpn_anchor_generator=anchor_generator, **{"rpn_score_thresh": 0.05, **kwargs}
    )


MODELS: dict[str, Callable[..., FasterRCNN]] = {
    "fasterrcnn_resnet50_fpn_v2": _resnet_fpn(resnet50, v2=True),
    "fasterrcnn_resnet50_fpn": _resnet_fpn(resnet50),
    "fasterrcnn_resnet18_fpn": _resnet_fpn(resnet18),
    "fasterrcnn_resnet34_fpn": _resnet_fpn(resnet34),
    "fasterrcnn_resnet101_fpn": _resnet_fpn(resnet101),
    "fasterrcnn_mobilenet_v3_large_fpn": _mobilenet_v3_large_fpn,
}


def check_model_name(name: str, flag: str) -> None:
    """Raise a ``ValueError`` naming ``flag`` and the choices when ``name`` is not a known model."""
    if name not in MODELS:
        raise ValueError(f"{flag}: unknown model {name!r}; choose one of: {', '.join(MODELS)}")


def build_detector(
    name: str,
    *,
    num_classes: int | None = None,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    trainable_backbone_layers: int | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """Build the Faster R-CNN called ``name`` (a key of :data:`MODELS`).

    Args:
        name: model name, e.g. ``"fasterrcnn_resnet50_fpn_v2"``.
        num_classes: classes including background; taken from ``weights`` when
            ``None`` (and then it must be given, or ``weights`` must be).
        weights: local file with a whole-detector state dict (torchvision COCO
            checkpoint or one of our ``checkpoint.pth`` files); loaded strictly.
        backbone_weights: local file with ImageNet classifier weights for the backbone.
        trainable_backbone_layers: as torchvision; ``None`` means all layers for a
            randomly initialised backbone, 3 for a pretrained one.
        **kwargs: passed to :class:`torchvision.models.detection.FasterRCNN`
            (``min_size``, ``max_size``, ``box_batch_size_per_image``, ...).

    Returns:
        The detector, in training mode, on the CPU.
    """
    check_model_name(name, "name")
    state = load_state_dict_file(weights) if weights is not None else None
    if num_classes is None:
        if state is None:
            raise ValueError("num_classes is required when no weights are given")
        num_classes = num_classes_in(state)
    pretrained = weights is not None or backbone_weights is not None
    model = MODELS[name](num_classes, pretrained, backbone_weights, trainable_backbone_layers, **kwargs)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"weights {weights} do not fit {name} with {num_classes} classes: {e}") from e
    return model
