"""COCO-format data: the dataset and its transforms, through torchvision's v2 dataset wrapper.

A data root looks like COCO's::

    DATA/annotations/instances_<split>.json
    DATA/<split>/<file_name>            (split names default to train2017 / val2017)

Labels are the raw COCO category ids (the detector has ``max id + 1`` classes,
background 0), as in torchvision's references, so its 91-class COCO
checkpoints apply unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
from torchvision.transforms import v2 as T


def annotation_file(data_path: str | Path, split: str) -> Path:
    """``DATA/annotations/instances_<split>.json``."""
    return Path(data_path) / "annotations" / f"instances_{split}.json"


def get_transform(train: bool, hflip_prob: float = 0.5) -> T.Compose:
    """Transforms on ``(image, target)``: for training a horizontal flip and box clean-up, then float images in [0, 1].

    Training boxes are clamped to the image and boxes under a pixel (with their
    labels) removed. Resizing and normalisation are left to the detector's own
    ``GeneralizedRCNNTransform``, so teacher and student see the same batch.
    """
    steps: list[Any] = [T.ToImage()]
    if train:
        if hflip_prob > 0:
            steps.append(T.RandomHorizontalFlip(hflip_prob))
        steps += [T.ClampBoundingBoxes(), T.SanitizeBoundingBoxes()]
    steps += [T.ToDtype(torch.float32, scale=True), T.ToPureTensor()]
    return T.Compose(steps)


class CocoWithoutCrowds(CocoDetection):
    """``CocoDetection`` without crowd regions, which torchvision's references leave out of training targets."""

    def _load_target(self, id: int) -> list[dict[str, Any]]:
        return [a for a in super()._load_target(id) if not a.get("iscrowd", 0)]


def get_coco(data_path: str | Path, split: str, train: bool, hflip_prob: float = 0.5) -> Dataset:
    """The dataset of ``split`` under ``data_path``; errors name ``--data-path`` and the missing file.

    Each item is ``(image, target)``: a float ``(3, H, W)`` image in [0, 1] and
    ``target = {"image_id": int}``, for training also ``"boxes"`` ``(N, 4)`` XYXY
    and ``"labels"`` ``(N,)`` int64, made by
    :func:`torchvision.datasets.wrap_dataset_for_transforms_v2`. Training drops
    crowd regions and images without a box; evaluation reads its ground truth
    from ``dataset.coco``.
    """
    root = Path(data_path)
    ann_file, img_folder = annotation_file(root, split), root / split
    for path in (ann_file, img_folder):
        if not path.exists():
            raise FileNotFoundError(
                f"--data-path {root}: {path} not found (COCO layout: annotations/instances_<split>.json and <split>/; "
                "make synthetic data with: python -m examples.detection_distill.make_synthetic --out DIR)"
            )
    dataset = (CocoWithoutCrowds if train else CocoDetection)(str(img_folder), str(ann_file), transforms=get_transform(train, hflip_prob))
    if train:  # an image without a box gives the RPN nothing to learn
        dataset.ids = [i for i in dataset.ids if any(a["bbox"][2] >= 1 and a["bbox"][3] >= 1 for a in dataset._load_target(i))]
    return wrap_dataset_for_transforms_v2(dataset, target_keys={"image_id", "boxes", "labels"} if train else {"image_id"})


def coco_num_classes(dataset: Dataset) -> int:
    """Classes of a detector for a dataset from :func:`get_coco`: the largest category id plus background."""
    return max(dataset.coco.getCatIds()) + 1


def coco_image_sizes(dataset: Dataset) -> list[tuple[int, int]]:
    """``(height, width)`` of every image of a dataset from :func:`get_coco`, from its annotation file (no image is opened)."""
    return [(dataset.coco.imgs[i]["height"], dataset.coco.imgs[i]["width"]) for i in dataset.ids]
