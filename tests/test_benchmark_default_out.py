"""``python -m benchmarks.run`` without ``--out`` writes under a git-ignored folder, not into the tracked results."""

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import run  # importable from the repository root (pytest's pythonpath), as examples is

ROOT = Path(__file__).resolve().parents[1]


def test_default_out_dir_is_git_ignored() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    default = (run.DEFAULT_OUT_DIR / "cpu-2026-01-01.json").relative_to(ROOT)
    assert subprocess.run(["git", "check-ignore", "-q", str(default)], cwd=ROOT).returncode == 0
    tracked = Path("benchmarks/results/cpu-2026-01-01.json")  # where runs went before: not ignored
    assert subprocess.run(["git", "check-ignore", "-q", str(tracked)], cwd=ROOT).returncode == 1


def test_a_run_without_out_writes_under_the_default_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(run, "DEFAULT_OUT_DIR", tmp_path / "default")
    out = run.run_suite([], [], [], [], torch.device("cpu"), warmup=0, reps=1, out=None, quick=True)
    assert out.parent == tmp_path / "default" and out.name.endswith("-quick.json")
