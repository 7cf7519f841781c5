"""COCO-format data: the dataset, its transforms and aspect-ratio grouped batching.

A data root looks like COCO's::

    DATA/annotations/instances_<split>.json
    DATA/<split>/<file_name>            (split names default to train2017 / val2017)

Labels are the raw COCO category ids (the detector has ``max id + 1`` classes,
background 0), as in torchvision's references, so its 91-class COCO
checkpoints apply unchanged.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, Sampler
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection
from torchvision.transforms import v2 as T


def annotation_file(data_path: str | Path, split: str) -> Path:
    """``DATA/annotations/instances_<split>.json``."""
    return Path(data_path) / "annotations" / f"instances_{split}.json"


def get_transform(train: bool, hflip_prob: float = 0.5) -> T.Compose:
    """Transforms on ``(image, target)``: horizontal flip for training, then float images in [0, 1].

    Resizing and normalisation are left to the detector's own
    ``GeneralizedRCNNTransform``, so teacher and student see the same batch.
    """
    steps: list[Any] = [T.ToImage()]
    if train and hflip_prob > 0:
        steps.append(T.RandomHorizontalFlip(hflip_prob))
    steps += [T.ToDtype(torch.float32, scale=True), T.ToPureTensor()]
    return T.Compose(steps)


class CocoDetectionDataset(CocoDetection):
    """COCO images with targets as torchvision detectors expect them.

    Each item is ``(image, target)`` with ``target = {"boxes": (N, 4) XYXY float,
    "labels": (N,) int64, "image_id": int}``. Crowd regions and boxes with no area
    are dropped, as torchvision's references do for training.

    Args:
        img_folder: folder of the split's images.
        ann_file: the split's ``instances_*.json``.
        transforms: callable on ``(image, target)``; see :func:`get_transform`.
        remove_images_without_annotations: drop images with no usable box
            (training only: an empty image gives the RPN nothing to learn).
    """

    def __init__(
        self, img_folder: str | Path, ann_file: str | Path, transforms: T.Compose, remove_images_without_annotations: bool = False
    ) -> None:
        super().__init__(str(img_folder), str(ann_file))
        self._pair_transforms = transforms
        if remove_images_without_annotations:
            self.ids = [i for i in self.ids if len(self._boxes_and_labels(i, *self._size(i))[0])]

    def _size(self, image_id: int) -> tuple[int, int]:
        info = self.coco.imgs[image_id]
        return info["height"], info["width"]

    def _boxes_and_labels(self, image_id: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        anns = [a for a in self._load_target(image_id) if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # XYWH -> XYXY
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        labels = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return boxes[keep], labels[keep]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.ids[index]
        image = self._load_image(image_id)
        height, width = image.height, image.width
        boxes, labels = self._boxes_and_labels(image_id, height, width)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": labels,
            "image_id": image_id,
        }
        return self._pair_transforms(image, target)

    @property
    def num_classes(self) -> int:
        """Classes of a detector for this data: the largest category id plus background."""
        return max(self.coco.getCatIds()) + 1

    def aspect_ratios(self) -> list[float]:
        """Width / height of every image, from the annotation file (no image is opened)."""
        return [self.coco.imgs[i]["width"] / self.coco.imgs[i]["height"] for i in self.ids]


def get_coco(data_path: str | Path, split: str, train: bool, hflip_prob: float = 0.5) -> CocoDetectionDataset:
    """The dataset of ``split`` under ``data_path``; errors name ``--data-path`` and the missing file."""
    root = Path(data_path)
    ann_file, img_folder = annotation_file(root, split), root / split
    for path in (ann_file, img_folder):
        if not path.exists():
            raise FileNotFoundError(
                f"--data-path {root}: {path} not found (COCO layout: annotations/instances_<split>.json and <split>/; "
                "make synthetic data with: python -m examples.detection_distill.make_synthetic --out DIR)"
            )
    return CocoDetectionDataset(img_folder, ann_file, get_transform(train, hflip_prob), remove_images_without_annotations=train)


def create_aspect_ratio_groups(aspect_ratios: Sequence[float], k: int = 3) -> list[int]:
    """Bin images by aspect ratio into ``2k + 2`` groups (bin edges log-spaced in [1/2, 2], as torchvision)."""
    bins = (2 ** np.linspace(-1, 1, 2 * k + 1)).tolist() if k > 0 else [1.0]
    return [bisect.bisect_right(bins, r) for r in aspect_ratios]


class GroupedBatchSampler(BatchSampler):
    """Batches whose images share an aspect-ratio group, so padding to a common size wastes little.

    Wraps any sampler (e.g. ``DistributedSampler``); yields ``len(sampler) //
    batch_size`` batches per epoch. Indices left over in partly filled groups at
    the end are batched together, group by group, and the last partial batch is
    dropped.

    Args:
        sampler: yields dataset indices.
        group_ids: group of every dataset index.
        batch_size: images per batch.
    """

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int) -> None:
        super().__init__(sampler, batch_size, drop_last=True)
        self.group_ids = group_ids

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = defaultdict(list)
        for idx in self.sampler:
            group = self.group_ids[idx]
            buffers[group].append(idx)
            if len(buffers[group]) == self.batch_size:
                yield buffers.pop(group)
        leftovers = [idx for group in sorted(buffers) for idx in buffers[group]]
        for start in range(0, len(leftovers) - self.batch_size + 1, self.batch_size):
            yield leftovers[start : start + self.batch_size]

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size
