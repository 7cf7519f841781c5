"""The main job: a teacher that detects, and students trained with and without SSIM distillation from it.

::

    python -m examples.detection_distill.demo

Offline, on generated data, about 5 minutes on an idle 2-core CPU (a GPU is used
when there is one):

1. writes a synthetic COCO-format data set to ``--out/data`` (unless it is
   there): 128-pixel images with one to three large shapes (rectangle,
   ellipse, triangle) on plain backgrounds;
2. trains the teacher from scratch, a ResNet-18 "lite" Faster R-CNN, for
   ``--teacher-epochs`` (``--out/teacher``);
3. trains two students of the same architecture for half as long, on one
   schedule and seed (``compare.py``'s machinery): without distillation
   (``--out/students/kd_none``) and with SSIM distillation of the frozen
   teacher's FPN features (``--out/students/kd_ssim``, ``--kd-weight 2``);
4. prints one table (AP, AP50, AP75, APs, APm, APl, seconds per training
   iteration) and writes it with a plot of the loss curves and AP bars to
   ``--out/results.{md,json,png}``.

Teacher and students share an architecture because, trained from scratch in
this budget, a wider ResNet-34 model learned less than the ResNet-18 one (see
the recipes tried in ``examples/detection_distill/README.md``): here the
teacher's advantage is its longer training. The lite model (see ``models.py``)
cuts the ResNet after ``layer3`` and uses a 64-channel FPN, so the coarsest FPN
level ('pool') of a 128x96 image is 4x3 pixels: too small for the paper's 11x11
window with reflect padding (each side must exceed 5), hence ``--kd-padding
zeros`` with the paper's window.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import compare, train, utils
from .coco_utils import annotation_file
from .make_synthetic import make_dataset

MODEL = "fasterrcnn_resnet18_lite_fpn"  # teacher and students
IMAGE_SIZE = 128


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line interface of the demo (the defaults take about 5 minutes on an idle 2-core CPU)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo", help="data/, teacher/, students/ and results.* go here (default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=utils.usable_cores(), help="CPU threads for torch (default: the usable cores, %(default)s)")
    parser.add_argument("--train", type=int, default=256, help="synthetic training images (default: %(default)s)")
    parser.add_argument("--val", type=int, default=64, help="synthetic validation images (default: %(default)s)")
    parser.add_argument("--teacher-epochs", type=int, default=10, help="(default: %(default)s)")
    parser.add_argument("--student-epochs", type=int, default=5, help="both students (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate, cosine decay per epoch (default: %(default)s)")
    parser.add_argument("--kd-weight", type=float, default=2.0, help="lambda of the SSIM feature loss (default: %(default)s)")
    parser.add_argument("--max-iters", type=int, help="cap iterations per epoch (smoke tests)")
    return parser


def main(args: argparse.Namespace) -> dict[str, compare.Run]:
    """Run the four steps; returns the table's rows ``{"teacher", "none", "ssim"}``."""
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = out / "data"
    if not annotation_file(data, "train2017").exists():
        make_dataset(data, num_train=args.train, num_val=args.val, size=IMAGE_SIZE, max_objects=3, object_sizes=(0.2, 0.5),
                     background="plain")
    # Small images on a CPU: AdamW from scratch, few proposals and sampled RoIs (the
    # box head dominates the cost), evaluation only at the end.
    common = [
        "--data-path", str(data), "--device", args.device, "--workers", "0", "--seed", "0",
        "--min-size", str(IMAGE_SIZE), "--max-size", str(IMAGE_SIZE), "--batch-size", "4",
        "--opt", "adamw", "--lr", str(args.lr), "--lr-schedule", "cosine", "--weight-decay", "1e-4", "--warmup-iters", "40",
        "--clip-grad-norm", "10",
        "--box-batch-size-per-image", "64", "--rpn-pre-nms-top-n-train", "200", "--rpn-post-nms-top-n-train", "100",
        "--rpn-post-nms-top-n-test", "100", "--eval-freq", "1000", "--print-freq", "10",
    ]
    if args.max_iters is not None:
        common += ["--max-iters", str(args.max_iters)]

    teacher_dir = out / "teacher"
    print(f"\n[1/3] teacher {MODEL}, {args.teacher_epochs} epochs")
    teacher_args = train.get_args_parser().parse_args(
        common + ["--epochs", str(args.teacher_epochs), "--student", MODEL, "--kd", "none", "--output-dir", str(teacher_dir)]
    )
    teacher_metrics = train.main(teacher_args)

    print(f"\n[2/3, 3/3] students {MODEL}, {args.student_epochs} epochs each: without distillation, then with SSIM distillation")
    student_args = compare.get_args_parser().parse_args(common + [
        "--epochs", str(args.student_epochs), "--student", MODEL, "--teacher", MODEL, "--teacher-weights", str(teacher_dir / "checkpoint.pth"),
        "--modes", "none", "ssim", "--kd-weight", str(args.kd_weight), "--kd-padding", "zeros",
        "--output-dir", str(out / "students"),
    ])
    students = compare.run_modes(student_args)

    student_epochs = compare.plural(args.student_epochs, "epoch")
    runs = {
        "teacher": compare.Run(f"teacher, {compare.plural(args.teacher_epochs, 'epoch')}", teacher_metrics, teacher_dir),
        "none": compare.Run(f"student, {student_epochs}, no KD", students["none"].metrics, students["none"].run_dir),
        "ssim": compare.Run(f"student, {student_epochs}, SSIM KD", students["ssim"].metrics, students["ssim"].run_dir),
    }
    if utils.is_main_process():
        title = f"{MODEL} on synthetic {IMAGE_SIZE}-px shapes, SSIM KD lambda {args.kd_weight}"
        paths = compare.write_results(runs, out, title)
        print("\n" + paths[0].read_text())
        print("wrote:\n" + "\n".join(f"  {p}" for p in paths))
        print("runs (checkpoint.pth, log.jsonl):\n" + "\n".join(f"  {run.run_dir}" for run in runs.values()))
    return runs


if __name__ == "__main__":
    main(get_args_parser().parse_args())
