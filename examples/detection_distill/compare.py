"""Train no-KD / MSE / SSIM students (L1 on request) on one schedule and tabulate their COCO metrics.

Takes every option of ``train.py`` except ``--kd`` (set per run from
``--modes``); each run writes to ``--output-dir/kd_<mode>/`` and the comparison
to ``--output-dir/results.{md,json,png}``::

    python -m examples.detection_distill.compare --data-path /data/coco \\
        --teacher fasterrcnn_resnet50_fpn_v2 --teacher-weights fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth \\
        --student fasterrcnn_resnet50_fpn --backbone-weights resnet50-0676ba61.pth --amp \\
        --modes none mse ssim --output-dir runs/compare

Works under ``torchrun`` like ``train.py`` (rank 0 writes the results).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed (set before pyplot is imported)
import matplotlib.pyplot as plt  # noqa: E402

from . import train, utils  # noqa: E402
from .coco_eval import COCO_METRICS  # noqa: E402
from .distill import KD_MODES  # noqa: E402
from .engine import NonFiniteLossError  # noqa: E402

LABELS = {"none": "no KD", "mse": "MSE", "l1": "L1", "ssim": "SSIM"}


def get_args_parser() -> argparse.ArgumentParser:
    """``train.py``'s options plus ``--modes``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[train.get_args_parser(add_help=False)])
    parser.add_argument("--modes", nargs="+", default=["none", "mse", "ssim"], choices=KD_MODES, help="KD modes to compare, in order")
    # --kd is chosen per run; None marks "not given" so that main() can reject it.
    parser.set_defaults(kd=None, output_dir="runs/detection_distill_compare")
    return parser


def write_results(results: dict[str, dict[str, float]], output_dir: Path, title: str) -> None:
    """Write ``results.md`` (table, AP in %), ``results.json`` and ``results.png`` (grouped bars)."""
    lines = [f"# {title}", "", "| student | " + " | ".join(COCO_METRICS) + " |", "|---" * (len(COCO_METRICS) + 1) + "|"]
    for mode, metrics in results.items():
        cells = ["diverged" if math.isnan(metrics[k]) else f"{100 * metrics[k]:.1f}" for k in COCO_METRICS]
        lines.append(f"| {LABELS[mode]} | " + " | ".join(cells) + " |")
    (output_dir / "results.md").write_text("\n".join(lines) + "\n")
    (output_dir / "results.json").write_text(json.dumps({"title": title, "results": results}, indent=2))

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(results)
    for i, (mode, metrics) in enumerate(results.items()):
        xs = [j + (i - (len(results) - 1) / 2) * width for j in range(len(COCO_METRICS))]
        ax.bar(xs, [100 * max(metrics[k], 0.0) for k in COCO_METRICS], width, label=LABELS[mode])  # -1 = no such objects
    ax.set_xticks(range(len(COCO_METRICS)), COCO_METRICS)
    ax.set_ylabel("COCO box AP (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(output_dir / "results.png", dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Run ``train.main`` once per mode and write the comparison; returns ``{mode: metrics}``.

    A run whose loss becomes non-finite is reported as diverged (NaN metrics)
    and the others still run.
    """
    if args.kd is not None:
        raise ValueError("--kd is set per run by compare.py; list the modes with --modes instead")
    output_dir = Path(args.output_dir)
    results: dict[str, dict[str, float]] = {}
    for mode in args.modes:
        run_args = copy.deepcopy(args)
        run_args.kd, run_args.output_dir = mode, str(output_dir / f"kd_{mode}")
        try:
            results[mode] = train.main(run_args)
        except NonFiniteLossError as e:
            print(f"kd {mode}: {e}")
            results[mode] = {k: math.nan for k in COCO_METRICS}
    if utils.is_main_process():
        title = f"{args.student} from {args.teacher}, lambda {args.kd_weight}, {args.epochs} epochs"
        write_results(results, output_dir, title)
        print((output_dir / "results.md").read_text())
    return results


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    finally:
        utils.cleanup_distributed()
