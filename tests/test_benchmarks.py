"""The benchmark suite runs on the CPU and writes what the report and README rely on.

Benchmarks measure and never assert times; these tests check the plumbing: the
``--quick`` run finishes, its JSON has the documented schema, peers that are
installed actually ran, and the report renders the markdown table and the plot.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = {
    "device": str,
    "torch": str,
    "date": str,
    "copy_bandwidth_gbps": float,
    "rows": list,
    "cases": dict,
    "impls": dict,
    "speedup_baseline": str,
}
ROW_KEYS = {
    "case",
    "mode",
    "dtype",
    "impl",
    "median_ms",
    "peak_extra_mb",
    "elements",
    "gbps",
    "roofline_ratio",
    "floor_ms",
    "speedup",
    "status",
}
CUDA_ONLY = {"fastssim_triton", "fastssim_triton_level", "fused_ssim", "fussim"}
#: Peers in the test extras: when importable they must have run.
PEER_MODULES = {
    "pytorch_msssim": "pytorch_msssim",
    "kornia": "kornia",
    "torchmetrics": "torchmetrics",
    "fastssim_torch": "fastssim",
    "fastssim_torch_level": "fastssim",
}


def _module(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` from the repository root, as the README says."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def quick_json(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    # One thread: the test machine may be busy, and two OpenMP threads then stall each other.
    proc = _module(
        "benchmarks.run", "--device", "cpu", "--quick", "--threads", "1", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    return out


def test_quick_run_schema(quick_json):
    result = json.loads(quick_json.read_text())
    for key, kind in TOP_LEVEL.items():
        assert isinstance(result[key], kind), key
    assert result["cuda"] is None  # a CPU run
    assert result["threads"] == 1 and result["quick"] is True
    assert "triton" in result  # version or null
    assert result["copy_bandwidth_gbps"] > 0

    rows = result["rows"]
    combos = {(r["case"], r["mode"], r["dtype"], r["impl"]) for r in rows}
    assert len(combos) == len(rows), "one row per (case, mode, dtype, impl)"
    assert {r["case"] for r in rows} == set(result["cases"])
    assert {r["mode"] for r in rows} == {"fwd", "fwdbwd"}
    assert {r["impl"] for r in rows} == set(result["impls"])
    for r in rows:
        assert set(r) >= ROW_KEYS
        assert r["elements"] == sum(n * c * h * w for n, c, h, w in result["cases"][r["case"]])
        assert r["floor_ms"] > 0
        assert r["peak_extra_mb"] is None  # no allocator statistics on the CPU
        if r["status"] == "ok":
            assert r["median_ms"] > 0 and r["gbps"] > 0 and r["roofline_ratio"] > 0
        else:
            assert r["status"].startswith(("unavailable: ", "error: ")), r["status"]
            assert r["median_ms"] is None
        if r["impl"] in CUDA_ONLY:
            assert r["status"].startswith("unavailable: needs CUDA"), r
        if r["impl"] in PEER_MODULES and importlib.util.find_spec(PEER_MODULES[r["impl"]]):
            assert r["status"] == "ok", r
    baseline = [r for r in rows if r["impl"] == result["speedup_baseline"] and r["status"] == "ok"]
    assert all(r["speedup"] == pytest.approx(1.0) for r in baseline)


def test_report_renders_markdown_and_plot(quick_json):
    pytest.importorskip("matplotlib")
    proc = _module("benchmarks.report", str(quick_json))
    assert proc.returncode == 0, proc.stderr
    md = quick_json.with_suffix(".md").read_text()
    assert md.startswith("# SSIM benchmark: CPU ")
    assert "| case | dtype | elements |" in md and "## Not run" in md
    assert "kornia" in md and "fpn_b1_c1" in md
    assert quick_json.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "option,value,choice",
    [
        ("--cases", "fpn_x2", "fpn_b<B>"),
        ("--impls", "fastssim_cuda", "fastssim_triton"),
        ("--dtypes", "fp8", "bf16"),
        ("--modes", "bwd", "fwdbwd"),
        ("--reps", "0", ">= 1"),
        ("--threads", "0", ">= 1"),
    ],
)
def test_bad_options_are_rejected_by_name(monkeypatch, capsys, option, value, choice):
    """Unknown names list the choices, bad counts the limit; it fails before measuring."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.run import main

    with pytest.raises(SystemExit) as exc:
        main(["--device", "cpu", option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert option in err and value in err and choice in err


def test_fpn_case_and_floor_match_the_design(monkeypatch):
    """Batch-8 FPN at 800x1344 is 183 M elements per tensor; fwd+bwd moves 2.2 GB in fp32
    (~0.7 ms at 3 TB/s) and, at the compiled kernels' 454 flop per element
    (benchmarks/NOTES.md), is flop-bound at ~1.24 ms at 67 TFLOP/s (H100/H200 fp32)."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.cases import fpn_level_sizes, parse_case
    from benchmarks.measure import floor_bytes, floor_ms

    assert fpn_level_sizes(800, 1344) == [(200, 336), (100, 168), (50, 84), (25, 42), (13, 21)]
    case = parse_case("fpn_b8")
    assert case.elements == pytest.approx(183e6, rel=0.01)
    assert floor_bytes(case.elements, 4, "fwdbwd") == pytest.approx(2.2e9, rel=0.01)
    assert floor_ms(case.elements, 4, "fwdbwd", 3000.0, None) == pytest.approx(0.73, rel=0.01)
    assert floor_ms(case.elements, 4, "fwdbwd", 3000.0, 67.0) == pytest.approx(1.24, rel=0.01)


def test_implementations_are_timed_round_robin():
    import torch
    from benchmarks import measure

    calls = []

    def recorder(name, fail_at=None):
        def fn():
            calls.append(name)
            if fail_at is not None and calls.count(name) == fail_at:
                raise RuntimeError(f"{name} failed")
        return fn

    fns = {"a": recorder("a"), "b": recorder("b", fail_at=3), "c": recorder("c", fail_at=1)}
    times = measure.time_interleaved_ms(fns, torch.device("cpu"), warmup=1, reps=3)
    # Warm-up of each (c fails there and is dropped), then rounds starting one further on
    # each time: a b, then b (fails on its third call) a, then a alone.
    assert calls == ["a", "b", "c", "a", "b", "b", "a", "a"]
    assert len(times["a"]) == 3 and all(t >= 0 for t in times["a"])
    assert isinstance(times["b"], RuntimeError) and isinstance(times["c"], RuntimeError)
    assert times["b"].__traceback__ is None  # a failed call's frames are not kept alive
