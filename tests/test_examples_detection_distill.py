"""CPU smoke tests of the detection distillation example (examples/detection_distill).

Tiny settings throughout: 128-pixel synthetic images, ResNet-18-FPN student and
teacher, two iterations per run, few RoIs and proposals. At min-size 128 the
FPN levels '3' and 'pool' are 4-5 and 2-3 pixels, so SSIM runs use zeros padding
(the reflect-padding failure is tested separately).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from pycocotools.coco import COCO
from torchvision.ops.misc import FrozenBatchNorm2d

from examples.detection_distill import compare, demo, train
from examples.detection_distill.coco_eval import COCO_METRICS
from examples.detection_distill.coco_utils import annotation_file
from examples.detection_distill.group_by_aspect_ratio import GroupedBatchSampler
from examples.detection_distill.make_synthetic import make_dataset
from examples.detection_distill.models import build_detector

pytestmark = pytest.mark.filterwarnings("ignore:--teacher-weights not given")  # random teachers are fine here

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--student", "fasterrcnn_resnet18_fpn", "--teacher", "fasterrcnn_resnet18_fpn",
    "--min-size", "128", "--max-size", "160", "--batch-size", "2", "--epochs", "1", "--max-iters", "2",
    "--workers", "0", "--device", "cpu", "--box-batch-size-per-image", "32", "--rpn-post-nms-top-n-test", "50",
    "--kd-padding", "zeros", "--print-freq", "1",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 training and 2 validation images of 128 pixels."""
    return make_dataset(tmp_path_factory.mktemp("synthetic"), num_train=4, num_val=2, size=128, seed=0)


def parse(data: Path, out: Path, *extra: str) -> argparse.Namespace:
    return train.get_args_parser().parse_args(["--data-path", str(data), "--output-dir", str(out), *TINY, *extra])


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def checkpoint(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch, two-step no-KD run; its checkpoint."""
    out = tmp_path_factory.mktemp("base")
    train.main(parse(data, out, "--kd", "none"))
    return out / "checkpoint.pth"


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools with NumPy 2
def test_synthetic_data_is_valid_coco(data: Path, tmp_path: Path) -> None:
    for split in ("train2017", "val2017"):
        coco = COCO(str(annotation_file(data, split)))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["rectangle", "ellipse", "triangle"]
        assert coco.anns and all(img_id in coco.imgToAnns for img_id in coco.imgs)
        for ann in coco.anns.values():
            img = coco.imgs[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
            assert 0 < ann["area"] <= (w + 0.01) * (h + 0.01) and ann["iscrowd"] == 0 and len(ann["segmentation"][0]) >= 6
            assert coco.annToMask(ann).sum() > 0
        assert all((data / split / img["file_name"]).is_file() for img in coco.imgs.values())
    again = make_dataset(tmp_path, num_train=4, num_val=2, size=128, seed=0)
    for split in ("train2017", "val2017"):  # deterministic for a seed
        assert annotation_file(again, split).read_text() == annotation_file(data, split).read_text()
        assert (again / split / "000000000001.jpg").read_bytes() == (data / split / "000000000001.jpg").read_bytes()


@pytest.mark.parametrize("kd", ["none", "mse", "l1", "ssim"])
def test_two_iterations_per_kd_mode(data: Path, tmp_path: Path, kd: str, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = train.main(parse(data, tmp_path, "--kd", kd))
    assert set(metrics) == set(COCO_METRICS)
    announcement = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("training "))
    if kd == "none":  # e.g. a teacher's own training: not announced as a student
        assert announcement.startswith("training fasterrcnn_resnet18_fpn without distillation") and "student" not in announcement
    else:
        assert announcement.startswith(f"training student fasterrcnn_resnet18_fpn with {kd} distillation")
    records = [r for r in read_log(tmp_path) if r["type"] == "train"]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert math.isfinite(record["loss"]) and record["s_per_iter"] > 0
        if kd == "none":
            assert "loss_kd" not in record
        else:
            assert record["loss_kd"] > 0
            levels = {k: v for k, v in record.items() if k.startswith("kd/")}
            assert list(levels) == ["kd/0", "kd/1", "kd/2", "kd/3", "kd/pool"]
            assert record["loss_kd"] == pytest.approx(2.0 * sum(levels.values()), rel=1e-4)  # lambda = 2
    assert (tmp_path / "checkpoint.pth").is_file()


def test_resume_continues_epoch_and_step(data: Path, checkpoint: Path, tmp_path: Path) -> None:
    train.main(parse(data, tmp_path, "--kd", "none", "--epochs", "2", "--resume", str(checkpoint)))
    state = torch.load(tmp_path / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 4)
    assert [r["step"] for r in read_log(tmp_path) if r["type"] == "train"] == [3, 4]
    assert {"model", "optimizer", "lr_scheduler", "scaler", "args"} <= set(state)
    with pytest.raises(ValueError, match="--epochs"):  # nothing left to train
        train.main(parse(data, tmp_path, "--kd", "none", "--epochs", "1", "--resume", str(checkpoint)))


def test_eval_only_returns_metrics(data: Path, checkpoint: Path, tmp_path: Path) -> None:
    metrics = train.main(parse(data, tmp_path, "--eval-only", "--resume", str(checkpoint)))
    assert set(metrics) == set(COCO_METRICS)
    assert all(-1.0 <= v <= 1.0 for v in metrics.values())


def test_eval_only_takes_the_model_name_from_the_checkpoint(data: Path, checkpoint: Path, tmp_path: Path) -> None:
    """The checkpoint holds a ResNet-18 FPN; without --student that is what is built, not the R50 default."""
    assert TINY[:2] == ["--student", "fasterrcnn_resnet18_fpn"]
    args = train.get_args_parser().parse_args(
        ["--data-path", str(data), "--output-dir", str(tmp_path), *TINY[2:], "--eval-only", "--resume", str(checkpoint)]
    )
    assert args.student is None
    assert train.main(args) == train.main(parse(data, tmp_path / "named", "--eval-only", "--resume", str(checkpoint)))
    assert args.student == "fasterrcnn_resnet18_fpn"
    with pytest.raises(ValueError, match="holds a fasterrcnn_resnet18_fpn model.*pass --student fasterrcnn_resnet18_fpn"):
        train.main(parse(data, tmp_path, "--eval-only", "--resume", str(checkpoint), "--student", "fasterrcnn_resnet34_fpn"))


def test_weights_of_another_model_are_reported_briefly(checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="does not fit fasterrcnn_resnet34_fpn: .* missing, .* unexpected") as error:
        build_detector("fasterrcnn_resnet34_fpn", weights=checkpoint)
    assert len(str(error.value)) < 600  # not torch's one line per key


def test_workers_default_to_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert train.get_args_parser().parse_args(["--data-path", "d"]).workers == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert train.get_args_parser().parse_args(["--data-path", "d"]).workers == 4


def test_checkpoint_serves_as_teacher_weights(data: Path, checkpoint: Path, tmp_path: Path) -> None:
    train.main(parse(data, tmp_path, "--kd", "mse", "--kd-adapter", "--teacher-weights", str(checkpoint)))
    assert all(math.isfinite(r["loss"]) for r in read_log(tmp_path) if r["type"] == "train")
    adapters = torch.load(tmp_path / "checkpoint.pth", map_location="cpu", weights_only=True)["feature_loss"]
    assert adapters["adapters.pool.weight"].shape == (256, 256, 1, 1)  # one 1x1 conv per level, bound by name


def test_torchrun_two_processes(data: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two workers share the cores
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "examples.detection_distill.train", "--data-path", str(data), "--output-dir", str(tmp_path),
        *TINY, "--kd", "ssim", "--batch-size", "1",
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    log = read_log(tmp_path)  # written by rank 0 only: one record per step
    assert [r["step"] for r in log if r["type"] == "train"] == [1, 2]
    assert all(r["loss_kd"] > 0 for r in log if r["type"] == "train")
    # The gathered two-process evaluation equals a one-process evaluation of the same weights.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels as the OMP_NUM_THREADS=1 workers
    try:
        single = train.main(parse(data, tmp_path / "single", "--eval-only", "--resume", str(tmp_path / "checkpoint.pth")))
    finally:
        torch.set_num_threads(threads)
    distributed = next(r for r in log if r["type"] == "eval")
    assert {k: distributed[k] for k in COCO_METRICS} == pytest.approx(single, abs=1e-6)


def test_compare_writes_table_and_plot(data: Path, tmp_path: Path) -> None:
    args = compare.get_args_parser().parse_args(
        ["--data-path", str(data), "--output-dir", str(tmp_path), *TINY, "--max-iters", "1", "--modes", "none", "ssim"]
    )
    results = compare.main(args)
    assert list(results) == ["none", "ssim"]
    table = (tmp_path / "results.md").read_text()
    assert table.startswith("# fasterrcnn_resnet18_fpn from fasterrcnn_resnet18_fpn, lambda 2.0, 1 epoch\n")
    rows = {line.split(" | ")[0][2:]: line.strip("| ").split(" | ") for line in table.splitlines() if line.startswith("| ")}
    assert rows["model"] == ["model", *COCO_METRICS, "s/iter"]
    for label in ("no KD", "SSIM KD"):  # no large objects in 128-pixel images: APl is '-', not -100.0
        assert rows[label][6] == "-" and float(rows[label][7]) > 0
    saved = json.loads((tmp_path / "results.json").read_text())["results"]
    assert saved.keys() == {"none", "ssim"}
    assert all(saved[mode]["APl"] is None and saved[mode]["s_per_iter"] > 0 for mode in saved)
    assert (tmp_path / "results.png").stat().st_size > 0


def test_compare_rejects_kd_as_a_usage_error(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        compare.get_args_parser().parse_args(["--data-path", str(data), "--kd", "mse"])
    assert exit_info.value.code == 2
    assert "--kd is set per run by compare.py; list the modes with --modes" in capsys.readouterr().err


def test_compare_checks_every_mode_before_training(data: Path, tmp_path: Path) -> None:
    """A level too small for reflect padding stops the comparison before the no-KD run trains, naming the flag."""
    args = compare.get_args_parser().parse_args(
        ["--data-path", str(data), "--output-dir", str(tmp_path), *TINY, "--modes", "none", "ssim", "--kd-padding", "reflect"]
    )
    with pytest.raises(ValueError, match="level '3'.*too small.*--kd-padding zeros"):
        compare.main(args)
    assert not (tmp_path / "kd_none").exists()


def test_demo_writes_table_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The tiny variant of the main job: every step runs and the table, JSON and plot are written."""
    args = demo.get_args_parser().parse_args(
        ["--out", str(tmp_path), "--device", "cpu", "--train", "4", "--val", "2",
         "--teacher-epochs", "1", "--student-epochs", "1", "--max-iters", "1"]
    )
    runs = demo.main(args)
    assert list(runs) == ["teacher", "none", "ssim"]
    assert all(set(run.metrics) == set(COCO_METRICS) for run in runs.values())
    out = capsys.readouterr().out
    table = (tmp_path / "results.md").read_text()
    assert table in out
    for label in ("teacher, 1 epoch", "student, 1 epoch, no KD", "student, 1 epoch, SSIM KD"):
        assert f"| {label} |" in table
    assert json.loads((tmp_path / "results.json").read_text())["results"].keys() == {"teacher", "none", "ssim"}
    assert (tmp_path / "results.png").stat().st_size > 0
    for name in ("results.md", "results.json", "results.png"):
        assert str(tmp_path / name) in out


def test_missing_data_path_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train.get_args_parser().parse_args(["--kd", "mse"])
    assert "--data-path" in capsys.readouterr().err


def test_bad_arguments_name_the_flag(data: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--data-path"):
        train.main(parse(tmp_path / "nowhere", tmp_path))
    with pytest.raises(ValueError, match="--student: unknown model 'resnet9'.*fasterrcnn_resnet50_fpn_v2"):
        train.main(parse(data, tmp_path, "--student", "resnet9"))
    with pytest.raises(FileNotFoundError, match="--teacher-weights"):
        train.main(parse(data, tmp_path, "--kd", "ssim", "--teacher-weights", str(tmp_path / "missing.pth")))
    with pytest.raises(ValueError, match="--eval-only"):
        train.main(parse(data, tmp_path, "--eval-only"))


def test_mismatched_fpn_levels(data: Path, tmp_path: Path) -> None:
    # MobileNetV3-FPN has levels '0', '1', 'pool'; ResNet FPNs have '0'..'3', 'pool'.
    with pytest.raises(ValueError, match="FPN levels"):
        train.main(parse(data, tmp_path, "--kd", "mse", "--student", "fasterrcnn_mobilenet_v3_large_fpn"))


def test_reflect_padding_too_small_for_tiny_levels(data: Path, tmp_path: Path) -> None:
    """Found before the first step (no log, no checkpoint), and the message names the command-line flags."""
    with pytest.raises(ValueError, match="--kd-padding reflect: .*level '3'.*too small.*--kd-padding zeros, a smaller --kd-window"):
        train.main(parse(data, tmp_path / "run", "--kd", "ssim", "--kd-padding", "reflect"))
    assert not (tmp_path / "run").exists()


def test_grouped_batch_sampler_keeps_groups() -> None:
    groups = [0, 1, 0, 1, 0, 1, 2]
    sampler = GroupedBatchSampler(range(len(groups)), groups, batch_size=2)
    # Full batches within a group first; the leftovers (4, 5, 6) are batched across groups, the odd one dropped.
    assert list(sampler) == [[0, 2], [1, 3], [4, 5]]
    assert len(sampler) == 3


def test_backbone_weights_load_from_a_local_file(tmp_path: Path) -> None:
    classifier = torchvision.models.resnet18(weights=None)
    torch.save(classifier.state_dict(), tmp_path / "resnet18.pth")
    detector = build_detector("fasterrcnn_resnet18_fpn", num_classes=4, backbone_weights=tmp_path / "resnet18.pth")
    body = detector.backbone.body
    assert torch.equal(body.layer4[0].conv1.weight, classifier.layer4[0].conv1.weight)
    assert isinstance(body.bn1, FrozenBatchNorm2d)  # pretrained backbone: frozen BN, as torchvision
    assert not body.layer1[0].conv1.weight.requires_grad and body.layer2[0].conv1.weight.requires_grad  # 3 stages train
    with pytest.raises(ValueError, match="--backbone-weights"):
        build_detector("fasterrcnn_resnet34_fpn", num_classes=4, backbone_weights=tmp_path / "resnet18.pth")
