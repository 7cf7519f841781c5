"""COCO box mAP with pycocotools, correct under ``torchrun``.

Each process turns its detections into COCO result dicts; they are gathered
with ``all_gather_object`` and rank 0 runs ``COCOeval`` once over the union
(images that ``DistributedSampler`` padded in twice are counted once), then
broadcasts the metrics so every rank returns the same dict.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
from typing import Any

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_convert

from . import utils

# The first six numbers of COCOeval.stats, in order.
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def format_metric(value: float) -> str:
    """A COCO metric in % for tables: '-' for COCO's -1 (no objects of that size), 'diverged' for NaN."""
    if math.isnan(value):
        return "diverged"
    return "-" if value < 0 else f"{100 * value:.1f}"


def json_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    """Metrics for JSON: COCO's -1 marker and NaN (diverged) become ``null``."""
    return {k: None if math.isnan(v) or v < 0 else v for k, v in metrics.items()}


def to_coco_results(image_id: int, output: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """One image's detector output (XYXY boxes in original pixels) as COCO result dicts (XYWH)."""
    boxes = box_convert(output["boxes"].float().cpu(), in_fmt="xyxy", out_fmt="xywh")
    return [
        {"image_id": image_id, "category_id": int(label), "bbox": [round(v, 2) for v in box], "score": float(score)}
        for box, label, score in zip(boxes.tolist(), output["labels"].tolist(), output["scores"].tolist())
    ]


def _load_results(coco_gt: COCO, results: list[dict[str, Any]]) -> COCO:
    """``coco_gt.loadRes`` that also accepts no detections at all (pycocotools indexes ``results[0]``)."""
    if results:
        return coco_gt.loadRes(results)
    coco_dt = COCO()
    coco_dt.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"], "annotations": []}
    coco_dt.createIndex()
    return coco_dt


def coco_evaluate(
    coco_gt: COCO, results_by_image: dict[int, list[dict[str, Any]]], verbose: bool = True
) -> dict[str, float]:
    """Box mAP over the images evaluated by all processes.

    Args:
        coco_gt: ground truth of the split.
        results_by_image: this process's detections, keyed by image id (every
            evaluated image must be a key, even with no detections).
        verbose: print pycocotools' summary table on rank 0.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` as floats in [0, 1]
        (-1 where the split has no object of that size), the same on every rank.
    """
    merged: dict[int, list[dict[str, Any]]] = {}
    for part in utils.all_gather_object(results_by_image):
        merged.update(part)
    metrics = None
    if utils.is_main_process():
        results = [r for dets in merged.values() for r in dets]
        # pycocotools prints progress chatter; keep only the summary table.
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval = COCOeval(coco_gt, _load_results(coco_gt, results), iouType="bbox")
            coco_eval.params.imgIds = sorted(merged)
            coco_eval.evaluate()
            coco_eval.accumulate()
        with contextlib.redirect_stdout(sys.stdout if verbose else io.StringIO()):
            coco_eval.summarize()
        metrics = {name: float(v) for name, v in zip(COCO_METRICS, coco_eval.stats)}
    return utils.broadcast_object(metrics)
