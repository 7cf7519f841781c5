"""Faster R-CNN detectors from torchvision, built by name with weights only from local files.

torchvision's own builders fetch pretrained weights from the hub; here every
model is assembled with torchvision's public backbone builders
(``resnet_fpn_backbone``, ``mobilenet_backbone``) and ``weights=None``, and weights
are loaded from files the user downloaded beforehand (``--teacher-weights``,
``--student-weights``, ``--backbone-weights``). The module structure is exactly
torchvision's, so its COCO checkpoints (e.g.
``torchvision.models.detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1.url``)
load with ``strict=True``.

``fasterrcnn_resnet18_lite_fpn`` is for small images on a CPU (the synthetic
demo): the ResNet-18 is cut after ``layer3`` (FPN levels '0', '1', '2' at strides
4, 8, 16 and 'pool' at 32), the FPN has 64 channels and the box head 256 units,
and the anchors (16 to 128 pixels) suit objects of a 128-pixel image.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor, mobilenet_backbone, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, RPNHead, TwoMLPHead
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d


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


def _load_backbone(body: nn.Module, path: str | Path | None, prefix: str = "") -> None:
    """Load ImageNet classifier weights into a detection backbone's ``body``.

    ``body`` holds the classifier's layers up to the last one the FPN reads, under
    the classifier's names minus ``prefix`` (MobileNet's ``"features."``); the
    classifier head and any later layers in the file are ignored.
    """
    if path is None:
        return
    state = {k[len(prefix):]: v for k, v in load_state_dict_file(path).items() if k.startswith(prefix)}
    backbone_keys = set(body.state_dict())
    # FrozenBatchNorm2d drops num_batches_tracked on load, so that key may be absent on either side.
    missing = sorted(k for k in backbone_keys - state.keys() if not k.endswith("num_batches_tracked"))
    if missing:
        raise ValueError(f"--backbone-weights {path}: missing {len(missing)} keys, e.g. {missing[:3]}; wrong architecture?")
    body.load_state_dict(state, strict=False)


def _trainable_layers(pretrained: bool, requested: int | None, max_value: int, default: int) -> int:
    """torchvision's rule: a randomly initialised backbone trains all layers, a pretrained one ``default``."""
    if requested is None:
        return default if pretrained else max_value
    if not 0 <= requested <= max_value:
        raise ValueError(f"--trainable-backbone-layers must be in [0, {max_value}] for this backbone, got {requested}")
    return requested


def _resnet_fpn(backbone_name: str) -> Callable[..., FasterRCNN]:
    """Builder for torchvision's ResNet-FPN Faster R-CNN (v1 layout) on any ResNet depth."""

    def build(num_classes: int, pretrained: bool, backbone_weights: str | None, trainable_layers: int | None, **kwargs: Any) -> FasterRCNN:
        # Frozen BN for pretrained backbones (tiny per-GPU batches), as torchvision.
        backbone = resnet_fpn_backbone(
            backbone_name=backbone_name, weights=None, norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d,
            trainable_layers=_trainable_layers(pretrained, trainable_layers, 5, 3),
        )
        _load_backbone(backbone.body, backbone_weights)
        return FasterRCNN(backbone, num_classes=num_classes, **kwargs)

    return build


def _resnet50_fpn_v2(
    num_classes: int, pretrained: bool, backbone_weights: str | None, trainable_layers: int | None, **kwargs: Any
) -> FasterRCNN:
    """torchvision's ``fasterrcnn_resnet50_fpn_v2`` layout (BatchNorm in the FPN and a conv box head).

    Built from torchvision's parts: its public builder ignores ``trainable_backbone_layers``
    without hub weights, and no public backbone builder puts BatchNorm in the FPN.
    """
    body = resnet50(weights=None)
    _load_backbone(body, backbone_weights)
    backbone = _resnet_fpn_extractor(body, _trainable_layers(pretrained, trainable_layers, 5, 3), norm_layer=nn.BatchNorm2d)
    anchor_generator = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    rpn_head = RPNHead(backbone.out_channels, anchor_generator.num_anchors_per_location()[0], conv_depth=2)
    box_head = FastRCNNConvFCHead((backbone.out_channels, 7, 7), [256] * 4, [1024], norm_layer=nn.BatchNorm2d)
    return FasterRCNN(
        backbone, num_classes=num_classes, rpn_anchor_generator=anchor_generator, rpn_head=rpn_head, box_head=box_head, **kwargs
    )


def _resnet_lite_fpn(backbone_name: str, fpn_channels: int, box_head_size: int) -> Callable[..., FasterRCNN]:
    """Builder for a small-image ResNet Faster R-CNN: trunk up to ``layer3``, ``fpn_channels``-wide FPN, thin box head."""

    def build(num_classes: int, pretrained: bool, backbone_weights: str | None, trainable_layers: int | None, **kwargs: Any) -> FasterRCNN:
        backbone = resnet_fpn_backbone(
            backbone_name=backbone_name, weights=None, norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d,
            trainable_layers=_trainable_layers(pretrained, trainable_layers, 5, 3), returned_layers=[1, 2, 3],
        )
        _load_backbone(backbone.body, backbone_weights)
        # The public builder's FPN is 256 channels wide; swap in a thinner one (most of the CPU time at 128 px).
        in_channels = [backbone.fpn.inner_blocks[i][0].in_channels for i in range(len(backbone.fpn.inner_blocks))]
        backbone.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=LastLevelMaxPool())
        backbone.out_channels = fpn_channels
        anchor_generator = AnchorGenerator(((16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 4)
        return FasterRCNN(
            backbone,
            rpn_anchor_generator=anchor_generator,
            box_head=TwoMLPHead(fpn_channels * 7 * 7, box_head_size),
            box_predictor=FastRCNNPredictor(box_head_size, num_classes),
            **kwargs,
        )

    return build


def _mobilenet_v3_large_fpn(
    num_classes: int, pretrained: bool, backbone_weights: str | None, trainable_layers: int | None, **kwargs: Any
) -> FasterRCNN:
    """torchvision's ``fasterrcnn_mobilenet_v3_large_fpn``: three FPN levels ('0', '1', 'pool'), strides 32/32/64."""
    backbone = mobilenet_backbone(
        backbone_name="mobilenet_v3_large", weights=None, fpn=True,
        norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d,
        trainable_layers=_trainable_layers(pretrained, trainable_layers, 6, 3),
    )
    _load_backbone(backbone.body, backbone_weights, prefix="features.")
    anchor_sizes = ((32, 64, 128, 256, 512),) * 3
    anchor_generator = AnchorGenerator(anchor_sizes, ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    return FasterRCNN(
        backbone, num_classes=num_classes, rpn_anchor_generator=anchor_generator, **{"rpn_score_thresh": 0.05, **kwargs}
    )


MODELS: dict[str, Callable[..., FasterRCNN]] = {
    "fasterrcnn_resnet50_fpn_v2": _resnet50_fpn_v2,
    "fasterrcnn_resnet50_fpn": _resnet_fpn("resnet50"),
    "fasterrcnn_resnet18_fpn": _resnet_fpn("resnet18"),
    "fasterrcnn_resnet34_fpn": _resnet_fpn("resnet34"),
    "fasterrcnn_resnet101_fpn": _resnet_fpn("resnet101"),
    "fasterrcnn_mobilenet_v3_large_fpn": _mobilenet_v3_large_fpn,
    # Small images on a CPU (the synthetic demo): see the module docstring.
    "fasterrcnn_resnet18_lite_fpn": _resnet_lite_fpn("resnet18", fpn_channels=64, box_head_size=256),
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
        load_detector_state(model, state, f"weights {weights}", name)
    return model


def load_detector_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, name: str) -> None:
    """``model.load_state_dict(state)`` that reports a wrong architecture in three lines, not one per key.

    Args:
        model: the detector to load into.
        state: its state dict.
        source: what the weights came from, for the message (e.g. ``"--resume ckpt.pth"``).
        name: the model name, for the message.

    Raises:
        ValueError: keys or shapes differ; says how many and shows a few.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    # FrozenBatchNorm2d (a detector built from weights) drops num_batches_tracked on load, as torch does.
    unexpected = [k for k in state if k not in expected and not k.endswith("num_batches_tracked")]
    misshapen = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or misshapen:
        examples = (missing + unexpected + misshapen)[:3]
        raise ValueError(
            f"{source} does not fit {name}: {len(missing)} missing, {len(unexpected)} unexpected and "
            f"{len(misshapen)} differently shaped keys (e.g. {examples}); were the weights saved from another model?"
        )
    model.load_state_dict(state)
