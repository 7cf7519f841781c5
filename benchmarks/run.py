"""Run the SSIM benchmark suite and write one JSON results file.

Usage (from the repository root)::

    python -m benchmarks.run                       # every default on this machine
    python -m benchmarks.run --device cpu --quick  # tiny shapes, seconds
    python -m benchmarks.run --device cuda --cases fpn_b8 --dtypes bf16 --modes fwdbwd

Every selected implementation runs on the same inputs for each
(case, dtype, mode); one that cannot run (no CUDA, not installed, unsupported
dtype, out of memory) is recorded with its reason in ``status`` and the suite
goes on. The file is rewritten after each (case, dtype), so an interrupted run
keeps what it measured. Render it with ``python -m benchmarks.report``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import torch

from benchmarks.cases import DEFAULT_CASES, QUICK_CASES, Case, resolve_cases
from benchmarks.impls import IMPLS, Impl, LossFn, describe_error, prepare
from benchmarks.measure import (
    FLOP_PER_ELEMENT,
    copy_bandwidth_gbps,
    device_info,
    floor_bytes,
    floor_ms,
    peak_extra_mb,
    synchronize,
    time_interleaved_ms,
)

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
MODES = ("fwd", "fwdbwd")
#: Where a run without ``--out`` writes: ``runs/`` is git-ignored, so a quick run
#: leaves no untracked files beside the committed results in ``benchmarks/results/``.
DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "runs" / "benchmarks"
#: Distributions whose versions the results file records.
VERSIONED = ("fastssim", "pytorch-msssim", "kornia", "torchmetrics", "fused-ssim", "fussim")
#: (warm-up, repetitions) when not given: CUDA timings are cheap and noisy at
#: small sizes, CPU ones slow; --quick only checks that everything runs.
DEFAULT_REPS = {"cuda": (5, 20), "cpu": (1, 5), "quick": (1, 3)}


def comma_list(option: str, text: str) -> list[str]:
    """Split a comma list, dropping blanks and repeats.

    Raises:
        ValueError: naming ``option`` when nothing is left.
    """
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ValueError(f"{option}: empty list")
    return names


def split_names(option: str, text: str, choices: Sequence[str]) -> list[str]:
    """Split a comma list and check every name against ``choices``.

    Raises:
        ValueError: naming ``option`` and the choices for an unknown name.
    """
    names = comma_list(option, text)
    unknown = [n for n in names if n not in choices]
    if unknown:
        raise ValueError(f"{option}: unknown name(s) {unknown}; choose from {list(choices)}")
    return names


def make_inputs(case: Case, dtype: torch.dtype, device: torch.device) -> tuple[list, list]:
    """Student levels (leaves that require grad) and teacher levels (no grad).

    Values are uniform in [0, 1], the range min-max normalised features have;
    the seed is fixed so every run and every implementation sees the same data.
    """
    gen = torch.Generator(device=device).manual_seed(0)

    def level(shape: tuple) -> torch.Tensor:
        # Drawn in fp32 and cast, so every dtype gets the same values.
        return torch.rand(shape, generator=gen, device=device).to(dtype)

    ys = [level(s) for s in case.shapes]
    xs = [level(s).requires_grad_() for s in case.shapes]
    return xs, ys


def make_step(loss_fn: LossFn, xs: list, ys: list, mode: str) -> Callable[[], None]:
    """One timed unit of work: the loss alone, or a training step's loss + backward."""
    if mode == "fwd":

        def step() -> None:
            with torch.no_grad():
                loss_fn(xs, ys, False)

    else:

        def step() -> None:
            for x in xs:
                x.grad = None  # a fresh dx each step, as after optimizer.zero_grad()
            loss_fn(xs, ys, True).backward()

    return step


def measure_rows(
    rows: list[dict], loss_fns: list[LossFn], xs: list, ys: list, device: torch.device, warmup: int,
    reps: int,
) -> None:
    """Time the implementations of ``rows`` (one case, dtype and mode) round-robin and fill
    each row; an exception becomes that row's status."""
    steps = {r["impl"]: make_step(fn, xs, ys, r["mode"]) for r, fn in zip(rows, loss_fns)}
    try:
        times = time_interleaved_ms(steps, device, warmup, reps)
    except Exception as exc:  # e.g. an asynchronous CUDA error surfacing at a synchronisation
        times = {r["impl"]: exc.with_traceback(None) for r in rows}
    for r in rows:
        try:
            if isinstance(times[r["impl"]], Exception):
                raise times[r["impl"]]
            median_ms = statistics.median(times[r["impl"]])
            for x in xs:
                x.grad = None  # so the last timed step's dx is not counted as live input
            peak = peak_extra_mb(steps[r["impl"]], device)
        except Exception as exc:  # a failing implementation is a result to record
            r["status"] = f"error: {describe_error(exc)}"
            if device.type == "cuda":
                torch.cuda.empty_cache()  # release what an out-of-memory error left behind
            continue
        moved = floor_bytes(r["elements"], xs[0].element_size(), r["mode"])
        r.update(
            median_ms=median_ms,
            peak_extra_mb=peak,
            gbps=moved / (median_ms * 1e-3) / 1e9,
            roofline_ratio=median_ms / r["floor_ms"],
        )


def empty_row(case: Case, mode: str, dtype_name: str, impl: str, status: str, floor: float) -> dict:
    """A results row with nothing measured yet."""
    return {
        "case": case.name,
        "mode": mode,
        "dtype": dtype_name,
        "impl": impl,
        "median_ms": None,
        "peak_extra_mb": None,
        "elements": case.elements,
        "gbps": None,
        "roofline_ratio": None,
        "floor_ms": floor,
        "speedup": None,
        "status": status,
    }


def add_speedups(rows: list[dict], baseline: str) -> None:
    """Set ``speedup`` = this row's time / the baseline's time at the same case, mode, dtype.

    So a peer's speedup is how many times faster the baseline (fastssim) is.
    """
    base = {
        (r["case"], r["mode"], r["dtype"]): r["median_ms"]
        for r in rows
        if r["impl"] == baseline and r["status"] == "ok"
    }
    for r in rows:
        ms = base.get((r["case"], r["mode"], r["dtype"]))
        r["speedup"] = r["median_ms"] / ms if ms and r["status"] == "ok" else None


def version(dist: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def slug(text: str) -> str:
    """Lower-case file-name form: runs of other characters become one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def run_suite(
    cases: list[Case],
    impls: list[Impl],
    dtype_names: list[str],
    modes: list[str],
    device: torch.device,
    warmup: int,
    reps: int,
    out: Path | None,
    quick: bool = False,
) -> Path:
    """Measure every (case, dtype, mode, impl) and write the results JSON.

    Returns:
        The path written: ``out``, or ``runs/benchmarks/<device>-<date>.json``
        (``-quick`` appended for ``--quick`` runs).
    """
    info = device_info(device)
    now = dt.datetime.now(dt.timezone.utc)
    if out is None:
        out = (
            DEFAULT_OUT_DIR
            / f"{slug(info.name)}-{now.date().isoformat()}{'-quick' if quick else ''}.json"
        )
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(
            f"warning: host load average {load:.1f}; other processes will skew the timings",
            file=sys.stderr,
        )
    bandwidth = copy_bandwidth_gbps(device)
    peak = "unknown" if info.peak_fp32_tflops is None else f"{info.peak_fp32_tflops} TFLOP/s"
    print(f"{info.name}: copy bandwidth {bandwidth:.1f} GB/s, FP32 peak {peak}")

    names = [i.name for i in impls]
    baseline = (
        "fastssim_triton"
        if device.type == "cuda" and "fastssim_triton" in names
        else "fastssim_torch"
    )
    built = {impl.name: prepare(impl, device) for impl in impls}
    result = {
        "device": info.name,
        "device_type": info.type,
        "threads": info.threads,
        # Other work on the host skews CPU timings (and CUDA launch overheads).
        "load_average_1m": load,
        "load_average_1m_end": load,  # updated as the run goes
        "torch": torch.__version__,
        "triton": version("triton"),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": platform.python_version(),
        "date": now.isoformat(timespec="seconds"),
        "copy_bandwidth_gbps": bandwidth,
        "peak_fp32_tflops": info.peak_fp32_tflops,
        "peak_fp32_source": info.peak_fp32_source,
        "flop_per_element": FLOP_PER_ELEMENT,
        "quick": quick,
        "warmup": warmup,
        "reps": reps,
        "timing": "round-robin",  # one call of each implementation in turn (measure.py)
        "speedup_baseline": baseline,
        "versions": {d: version(d) for d in VERSIONED},
        "impls": {i.name: i.settings for i in impls},
        "cases": {c.name: [list(s) for s in c.shapes] for c in cases},
        "rows": [],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    for case in cases:
        for dtype_name in dtype_names:
            xs, ys = make_inputs(case, DTYPES[dtype_name], device)
            for mode in modes:
                floor = floor_ms(
                    case.elements, xs[0].element_size(), mode, bandwidth, info.peak_fp32_tflops
                )
                rows = [empty_row(case, mode, dtype_name, impl.name, built[impl.name][1], floor)
                        for impl in impls]
                runnable = [(r, built[r["impl"]][0]) for r in rows if built[r["impl"]][0] is not None]
                measure_rows([r for r, _ in runnable], [fn for _, fn in runnable], xs, ys, device,
                             warmup, reps)
                for r in rows:
                    result["rows"].append(r)
                    ms = "-" if r["median_ms"] is None else f"{r['median_ms']:.3f} ms"
                    what = f"{case.name:>16} {mode:6} {dtype_name:4} {r['impl']:16}"
                    print(f"{what} {ms:>13}  {r['status']}", flush=True)
            del xs, ys  # free this case's inputs before the next are drawn
            synchronize(device)
            add_speedups(result["rows"], baseline)
            result["load_average_1m_end"] = os.getloadavg()[0]
            out.write_text(json.dumps(result, indent=1) + "\n")
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (defaults depend on --device and --quick)."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Time fastssim against its reference and peer SSIM libraries; "
        "write one JSON results file.",
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu"
    )
    p.add_argument(
        "--dtypes", help=f"comma list of {list(DTYPES)}; default: all on cuda, fp32 on cpu"
    )
    p.add_argument(
        "--cases",
        help="comma list of fpn_b<B>[_c<C>], NxCxHxW or a group (large, sweep, sweep_small); "
        f"default on cuda: {','.join(DEFAULT_CASES['cuda'])}; "
        f"on cpu: {','.join(DEFAULT_CASES['cpu'])}",
    )
    p.add_argument(
        "--modes", default=",".join(MODES), help=f"comma list of {list(MODES)} (default: both)"
    )
    p.add_argument(
        "--impls", default=",".join(IMPLS), help=f"comma list of {list(IMPLS)} (default: all)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny shapes ({','.join(QUICK_CASES)}), fp32, few repetitions: "
        "checks that everything runs",
    )
    p.add_argument(
        "--warmup", type=int, help="untimed calls before timing (default: cuda 5, cpu 1, quick 1)"
    )
    p.add_argument(
        "--reps",
        type=int,
        help="timed calls; the median is reported (default: cuda 20, cpu 5, quick 3)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for PyTorch ops (default: PyTorch's). On a shared host, 1 thread "
        "keeps CPU timings stable: idle-waiting OpenMP threads stall when descheduled",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="results JSON path (default: runs/benchmarks/<device>-<date>.json, git-ignored; "
        "pass benchmarks/results/... to add a run to the committed results)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the suite, print where the results went."""
    parser = build_parser()
    args = parser.parse_args(argv)
    device_type = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available to this PyTorch build or machine")
    default_warmup, default_reps = DEFAULT_REPS["quick" if args.quick else device_type]
    warmup = default_warmup if args.warmup is None else args.warmup
    reps = default_reps if args.reps is None else args.reps
    if warmup < 0:
        parser.error(f"--warmup: must be >= 0, got {warmup}")
    if reps < 1:
        parser.error(f"--reps: must be >= 1, got {reps}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads: must be >= 1, got {args.threads}")
    default_dtypes = "fp32" if args.quick or device_type == "cpu" else ",".join(DTYPES)
    try:
        if args.cases is not None:
            case_names = comma_list("--cases", args.cases)
        else:
            case_names = QUICK_CASES if args.quick else DEFAULT_CASES[device_type]
        cases = resolve_cases(case_names)
        dtypes = split_names("--dtypes", args.dtypes or default_dtypes, list(DTYPES))
        modes = split_names("--modes", args.modes, MODES)
        impls = [IMPLS[n] for n in split_names("--impls", args.impls, list(IMPLS))]
    except ValueError as exc:
        parser.error(str(exc))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = run_suite(
        cases, impls, dtypes, modes, torch.device(device_type), warmup, reps, args.out, args.quick
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
