"""The whole pipeline on CPU in a few minutes: synthetic data -> teacher -> SSIM-distilled student -> COCO mAP.

::

    python -m examples.detection_distill.demo

1. writes a synthetic COCO-format data set to ``--out/data`` (unless it is there);
2. trains a ResNet-34-FPN Faster R-CNN teacher from scratch, briefly (no
   pretrained weights exist offline);
3. trains a ResNet-18-FPN student with SSIM distillation from that teacher's
   ``checkpoint.pth`` (``--kd ssim --kd-weight 2``);
4. prints both models' COCO box metrics.

Images are tiny (128 px, resized to at most 160), so the coarsest FPN level ('pool', input/64) is
2x3 pixels: too small for the paper's 11x11 reflect-padded window, hence
``--kd-padding zeros`` here. Detectors trained from scratch for two minutes on
a CPU score close to zero AP (about 0.5 AP, 2 AP50); the demo shows that the
pipeline runs end to end, not the paper's gains (``compare.py`` on COCO with
pretrained weights shows those).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import train, utils
from .coco_eval import COCO_METRICS
from .coco_utils import annotation_file
from .make_synthetic import make_dataset

TEACHER = "fasterrcnn_resnet34_fpn"
STUDENT = "fasterrcnn_resnet18_fpn"


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line interface of the demo (the defaults take a few minutes on 2 CPU cores)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo", help="data, teacher/ and student/ go here (default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train", type=int, default=96, help="synthetic training images (default: %(default)s)")
    parser.add_argument("--val", type=int, default=24, help="synthetic validation images (default: %(default)s)")
    parser.add_argument("--teacher-epochs", type=int, default=2, help="more epochs, higher AP (default: %(default)s)")
    parser.add_argument("--student-epochs", type=int, default=2, help="(default: %(default)s)")
    parser.add_argument("--max-iters", type=int, help="cap iterations per epoch (smoke tests)")
    return parser


def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Run the four steps; returns ``{"teacher": metrics, "student": metrics}``."""
    out = Path(args.out)
    data = out / "data"
    if not annotation_file(data, "train2017").exists():
        make_dataset(data, num_train=args.train, num_val=args.val, size=128)
    # Settings for tiny images on a CPU: fewer sampled RoIs and proposals (the box
    # head dominates the cost), gradient clipping for from-scratch training.
    common = [
        "--data-path", str(data), "--device", args.device, "--min-size", "128", "--max-size", "160",
        "--batch-size", "2", "--workers", "0", "--lr", "0.01", "--clip-grad-norm", "10", "--warmup-iters", "20",
        "--box-batch-size-per-image", "128", "--rpn-post-nms-top-n-test", "300", "--eval-freq", "1000",
    ]
    if args.max_iters is not None:
        common += ["--max-iters", str(args.max_iters)]
    parser = train.get_args_parser()
    teacher_dir = out / "teacher"
    teacher_metrics = train.main(parser.parse_args(common + [
        "--student", TEACHER, "--kd", "none", "--epochs", str(args.teacher_epochs), "--output-dir", str(teacher_dir),
    ]))
    student_metrics = train.main(parser.parse_args(common + [
        "--student", STUDENT, "--teacher", TEACHER, "--teacher-weights", str(teacher_dir / "checkpoint.pth"),
        "--kd", "ssim", "--kd-weight", "2", "--kd-padding", "zeros", "--epochs", str(args.student_epochs),
        "--output-dir", str(out / "student"),
    ]))
    results = {"teacher": teacher_metrics, "student": student_metrics}
    if utils.is_main_process():
        print("\nCOCO box metrics (%) on the synthetic validation split ('-': no objects of that size)")
        print(f"{'model':<32}" + "".join(f"{k:>7}" for k in COCO_METRICS))
        for role, name in (("teacher", TEACHER), ("student", STUDENT)):
            cells = ("      -" if results[role][k] < 0 else f"{100 * results[role][k]:7.1f}" for k in COCO_METRICS)
            print(f"{role + ' ' + name:<32}" + "".join(cells))
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
