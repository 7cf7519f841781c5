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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed (set before pyplot is imported)
import matplotlib.pyplot as plt  # noqa: E402

from . import train, utils  # noqa: E402
from .coco_eval import COCO_METRICS, format_metric, json_metrics  # noqa: E402
from .distill import KD_MODES  # noqa: E402
from .engine import NonFiniteLossError  # noqa: E402

LABELS = {"none": "no KD", "mse": "MSE KD", "l1": "L1 KD", "ssim": "SSIM KD"}
TABLE_METRICS = COCO_METRICS + ("s/iter",)



def get_args_parser() -> argparse.ArgumentParser:
    """``train.py``'s options plus ``--modes``."""
    # conflict_handler="resolve": --kd is redefined below, to reject it at parse time.
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], parents=[train.get_args_parser(add_help=False)], conflict_handler="resolve"
    )
    parser.add_argument("--modes", nargs="+", default=["none", "mse", "ssim"], choices=KD_MODES, help="KD modes to compare, in order")
    parser.add_argument("--kd", action=_RejectKd, help=argparse.SUPPRESS)
    parser.set_defaults(output_dir="runs/detection_distill_compare")
    return parser


class _RejectKd(argparse.Action):
    """``--kd`` is chosen per run from ``--modes``; giving it is a usage error (exit status 2), not a traceback."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object, option_string: str | None = None
    ) -> None:
        parser.error(f"{option_string} is set per run by compare.py; list the modes with --modes instead")


def plural(count: int, noun: str) -> str:
    """``"1 epoch"``, ``"2 epochs"``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@dataclass
class Run:
    """One trained model of a comparison: its row label, final COCO metrics and output directory (with ``log.jsonl``)."""

    label: str
    metrics: dict[str, float]
    run_dir: Path

    def log(self, kind: str) -> list[dict[str, Any]]:
        """The run's ``log.jsonl`` records of type ``kind`` (``"train"`` or ``"eval"``); none if it wrote no log."""
        path = self.run_dir / "log.jsonl"
        if not path.is_file():
            return []
        records = (json.loads(line) for line in path.read_text().splitlines())
        return [r for r in records if r["type"] == kind]

    def seconds_per_iteration(self) -> float:
        """Mean wall time of a training iteration (data, forward, backward, step) over the whole run; NaN without a log."""
        records = self.log("train")
        if not records:
            return math.nan
        steps = [records[0]["step"]] + [b["step"] - a["step"] for a, b in zip(records, records[1:])]
        return sum(r["s_per_iter"] * n for r, n in zip(records, steps)) / sum(steps)


def write_results(runs: dict[str, Run], output_dir: Path, title: str) -> list[Path]:
    """Write the comparison: ``results.md`` (table), ``results.json`` and ``results.png`` (loss curves and AP bars).

    Args:
        runs: the rows, keyed by a short name used in the JSON (e.g. the KD mode).
        output_dir: where the three files go.
        title: first line of the table and of the figure.

    Returns:
        The paths written.
    """
    header = "| model | " + " | ".join(TABLE_METRICS) + " |"
    lines = [f"# {title}", "", header, "|---" * (len(TABLE_METRICS) + 1) + "|"]
    for run in runs.values():
        cells = [format_metric(run.metrics[k]) for k in COCO_METRICS] + [f"{run.seconds_per_iteration():.3f}"]
        lines.append(f"| {run.label} | " + " | ".join(cells) + " |")
    lines += ["", "COCO box metrics in %; '-': the split has no objects of that size; s/iter: seconds per training iteration."]
    paths = [output_dir / "results.md", output_dir / "results.json", output_dir / "results.png"]
    paths[0].write_text("\n".join(lines) + "\n")
    json_runs = {
        key: {"label": run.label, **json_metrics(run.metrics), "s_per_iter": run.seconds_per_iteration()} for key, run in runs.items()
    }
    paths[1].write_text(json.dumps({"title": title, "results": json_runs}, indent=2))
    _plot(runs, title, paths[2])
    return paths


def _plot(runs: dict[str, Run], title: str, path: Path) -> None:
    """Training loss curves (detection loss solid, KD term dashed) beside grouped AP / AP50 / AP75 bars."""
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, run in enumerate(runs.values()):
        records = run.log("train")
        color = f"C{i}"
        steps = [r["step"] for r in records]
        curves.plot(steps, [r["loss"] - r.get("loss_kd", 0.0) for r in records], color=color, label=f"{run.label}: detection")
        if records and "loss_kd" in records[0]:
            curves.plot(steps, [r["loss_kd"] for r in records], color=color, linestyle="--", label=f"{run.label}: KD term")
    curves.set_xlabel("iteration")
    curves.set_ylabel("training loss")
    curves.set_title("training losses")
    curves.legend(fontsize=8)
    shown = ("AP", "AP50", "AP75")
    width = 0.8 / len(runs)
    for i, run in enumerate(runs.values()):
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(shown))]
        heights = [0.0 if math.isnan(run.metrics[k]) else 100 * run.metrics[k] for k in shown]  # NaN: diverged
        drawn = bars.bar(xs, heights, width, label=run.label, color=f"C{i}")
        bars.bar_label(drawn, fmt="%.1f", fontsize=7)
    bars.set_xticks(range(len(shown)), shown)
    bars.set_ylabel("COCO box AP on the validation split (%)")
    bars.set_title("detection accuracy")
    bars.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_modes(args: argparse.Namespace) -> dict[str, Run]:
    """Train one student per ``args.modes`` on the same schedule and seed, each in ``--output-dir/kd_<mode>``.

    Every run is set up (data, models, feature loss on the smallest batch) before
    the first one trains, so a setting that cannot work stops the comparison at
    once. A run whose loss becomes non-finite is reported as diverged (NaN
    metrics) and the others still run.

    Returns:
        ``{mode: Run}`` in the order of ``args.modes``.
    """
    output_dir = Path(args.output_dir)
    runs_args = {}
    for mode in args.modes:
        run_args = copy.deepcopy(args)
        run_args.kd, run_args.output_dir = mode, str(output_dir / f"kd_{mode}")
        train.prepare(run_args)
        runs_args[mode] = run_args
    runs: dict[str, Run] = {}
    for mode, run_args in runs_args.items():
        try:
            metrics = train.main(run_args)
        except NonFiniteLossError as e:
            print(f"kd {mode}: {e}")
            metrics = {k: math.nan for k in COCO_METRICS}
        runs[mode] = Run(LABELS[mode], metrics, Path(run_args.output_dir))
    return runs


def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Run :func:`run_modes` and write the comparison; returns ``{mode: metrics}``."""
    runs = run_modes(args)
    if utils.is_main_process():
        title = f"{args.student or train.DEFAULT_STUDENT} from {args.teacher}, lambda {args.kd_weight}, {plural(args.epochs, 'epoch')}"
        paths = write_results(runs, Path(args.output_dir), title)
        print(paths[0].read_text())
        print("wrote " + ", ".join(map(str, paths)))
    return {mode: run.metrics for mode, run in runs.items()}


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    finally:
        utils.cleanup_distributed()
