"""Render a results JSON from ``benchmarks.run`` as a markdown table and a plot.

Usage::

    python -m benchmarks.report benchmarks/results/<device>-<date>.json

writes ``<device>-<date>.md`` (summary table, every measurement, what did not
run and why) and ``<device>-<date>.png`` (log-log time against elements per
implementation, one panel per mode, with the roofline floor) next to the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

LINESTYLES = {"fp32": "-", "bf16": "--", "fp16": ":"}
ITEMSIZE = {"fp32": 4, "bf16": 2, "fp16": 2}


def load(path: Path) -> dict:
    """Read a results file, checking that it has the keys the report uses.

    Raises:
        ValueError: naming the file and the missing keys.
    """
    result = json.loads(path.read_text())
    missing = [
        k for k in ("device", "date", "copy_bandwidth_gbps", "rows", "cases") if k not in result
    ]
    if missing:
        raise ValueError(f"{path}: not a benchmarks.run results file (missing {missing})")
    return result


def _fmt(value: float | None) -> str:
    """A number as a reader scans it: 12,345 / 123 / 12.3 / 1.23 / 0.0123; '-' when missing."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _fmt_count(n: int) -> str:
    """Element counts as 89.5k, 45.8M, 1.2G."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def _table(header: Sequence[str], body: list[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def _modes(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["mode"] for r in rows))


def _summary(rows: list[dict], impls: list[str], baseline: str | None) -> list[str]:
    """Per mode: one line per (case, dtype), one column per implementation."""
    out = [
        "",
        "## Median time (ms)",
        "",
        f"In brackets: how many times faster `{baseline}` is than that implementation "
        "(its time / the baseline's time) at the same case, mode and dtype.",
    ]
    for mode in _modes(rows):
        by_key: dict[tuple, dict[str, dict]] = {}
        for r in rows:
            if r["mode"] == mode and r["status"] == "ok":
                by_key.setdefault((r["case"], r["dtype"], r["elements"]), {})[r["impl"]] = r
        body = []
        for (case, dtype, elements), cells in by_key.items():
            line = [case, dtype, _fmt_count(elements)]
            for impl in impls:
                r = cells.get(impl)
                if r is None:
                    line.append("-")
                elif r["speedup"] is None or impl == baseline:
                    line.append(_fmt(r["median_ms"]))
                else:
                    line.append(f"{_fmt(r['median_ms'])} ({r['speedup']:.2f}x)")
            body.append(line)
        out += ["", f"### {mode}", "", *_table(["case", "dtype", "elements", *impls], body)]
    return out


def _details(rows: list[dict]) -> list[str]:
    """Every measured row with all its columns."""
    header = [
        "case", "mode", "dtype", "impl", "elements", "median ms", "peak extra MiB",
        "extra / input", "GB/s", "x floor", "speed-up",
    ]  # fmt: skip
    body = []
    for r in rows:
        if r["status"] != "ok":
            continue
        # Extra memory in units of one input tensor (x alone) of this case and dtype.
        input_mb = r["elements"] * ITEMSIZE.get(r["dtype"], 4) / 2**20
        extra = None if r["peak_extra_mb"] is None else r["peak_extra_mb"] / input_mb
        body.append([
            r["case"], r["mode"], r["dtype"], r["impl"], _fmt_count(r["elements"]),
            _fmt(r["median_ms"]), _fmt(r["peak_extra_mb"]), _fmt(extra), _fmt(r["gbps"]),
            _fmt(r["roofline_ratio"]), _fmt(r["speedup"]),
        ])  # fmt: skip
    return ["", "## All measurements", "", *_table(header, body)]


def _not_run(rows: list[dict]) -> list[str]:
    """Each (implementation, reason) that produced no time, with its number of rows."""
    failed = Counter((r["impl"], r["status"]) for r in rows if r["status"] != "ok")
    if not failed:
        return []
    body = [[impl, status.replace("|", "\\|"), str(n)] for (impl, status), n in failed.items()]
    return ["", "## Not run", "", *_table(["impl", "status", "rows"], body)]


def markdown(result: dict, image_name: str | None = None) -> str:
    """The report as markdown; ``image_name`` links the plot when given."""
    rows = result["rows"]
    impls_ok = list(dict.fromkeys(r["impl"] for r in rows if r["status"] == "ok"))
    flop = result.get("flop_per_element", {})
    peak = result.get("peak_fp32_tflops")
    out = [
        f"# SSIM benchmark: {result['device']}",
        "",
        f"{result['date']} · torch {result.get('torch')} · "
        f"triton {result.get('triton') or 'none'} · CUDA {result.get('cuda') or 'none'} · "
        f"PyTorch CPU threads: {result.get('threads')} · "
        f"host load average {_fmt(result.get('load_average_1m'))} at start, "
        f"{_fmt(result.get('load_average_1m_end'))} at the end · "
        f"warm-up {result.get('warmup')}, median of {result.get('reps')}"
        + (" (implementations timed round-robin)" if result.get("timing") == "round-robin" else ""),
        "",
        f"Floor = max(bytes / measured copy bandwidth, flop / FP32 peak): copy bandwidth "
        f"{result['copy_bandwidth_gbps']:.1f} GB/s (large tensor copy, this run); FP32 peak "
        f"{'unknown' if peak is None else f'{peak} TFLOP/s'} ({result.get('peak_fp32_source')}). "
        f"Bytes: read x and y once (+ write dx once for fwdbwd) in the input dtype; "
        f"flop per element: {', '.join(f'{m} {n}' for m, n in flop.items())}.",
    ]
    if image_name:
        out += ["", f"![median time against elements]({image_name})"]
    if impls_ok:
        out += _summary(rows, impls_ok, result.get("speedup_baseline"))
        out += _details(rows)
    out += _not_run(rows)
    if result.get("impls"):
        versions = result.get("versions", {})
        out += ["", "## Implementations", ""]
        out += [f"- `{name}`: {settings}" for name, settings in result["impls"].items()]
        out += ["", "Versions: " + ", ".join(f"{d} {v}" for d, v in versions.items()) + "."]
    out += ["", "## Cases", ""]
    out += [
        f"- `{name}`: " + ", ".join("x".join(map(str, s)) for s in shapes)
        for name, shapes in result["cases"].items()
    ]
    return "\n".join(out) + "\n"


def plot(result: dict, path: Path) -> None:
    """Log-log median time against elements: one panel per mode, one colour per impl.

    Single-map cases are joined by lines (the size sweep); multi-level (FPN)
    cases are stars. Line style marks the dtype; the dashed black line is the
    floor for the first dtype measured.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on benchmark machines
    import matplotlib.pyplot as plt

    rows = result["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    multi = {name for name, shapes in result["cases"].items() if len(shapes) > 1}
    impls = list(dict.fromkeys(r["impl"] for r in ok))
    colours = {impl: plt.cm.tab10(i % 10) for i, impl in enumerate(impls)}
    modes = _modes(rows)
    fig, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), 5), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        in_mode = [r for r in rows if r["mode"] == mode]
        dtypes = list(dict.fromkeys(r["dtype"] for r in in_mode))
        floor = sorted({(r["elements"], r["floor_ms"]) for r in in_mode if r["dtype"] == dtypes[0]})
        ax.plot(*zip(*floor), "k--", lw=1, label=f"floor ({dtypes[0]})")
        for impl in impls:
            for dtype in dtypes:
                mine = [
                    r for r in ok if r["mode"] == mode and r["impl"] == impl and r["dtype"] == dtype
                ]
                line = sorted(
                    (r["elements"], r["median_ms"]) for r in mine if r["case"] not in multi
                )
                stars = [(r["elements"], r["median_ms"]) for r in mine if r["case"] in multi]
                style = dict(color=colours[impl], ls=LINESTYLES.get(dtype, "-."))
                if line:
                    ax.plot(*zip(*line), marker="o", ms=3, label=f"{impl} ({dtype})", **style)
                if stars:
                    ax.plot(
                        *zip(*stars),
                        marker="*",
                        ms=11,
                        ls="none",
                        color=colours[impl],
                        label=None if line else f"{impl} ({dtype})",
                    )
        ax.set(
            xscale="log",
            yscale="log",
            title=mode,
            xlabel="elements per input tensor",
            ylabel="median time (ms)",
        )
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    threads = f", threads: {result.get('threads')}" if result.get("device_type") == "cpu" else ""
    fig.suptitle(f"{result['device']} ({result['date'][:10]}{threads}); stars: FPN level sets")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Write the .md and .png next to the given results JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Render a benchmarks.run results JSON as <name>.md and <name>.png beside it.",
    )
    parser.add_argument("json", type=Path, help="results file written by python -m benchmarks.run")
    args = parser.parse_args(argv)
    if not args.json.is_file():
        parser.error(f"json: no such file: {args.json}")
    try:
        result = load(args.json)
    except (ValueError, json.JSONDecodeError) as exc:
        parser.error(f"json: {exc}")
    md_path, png_path = args.json.with_suffix(".md"), args.json.with_suffix(".png")
    md_path.write_text(markdown(result, png_path.name))
    print(f"wrote {md_path}")
    try:
        plot(result, png_path)
    except ImportError as exc:
        print(
            f"error: the plot needs matplotlib ({exc}); pip install 'fastssim[bench]'",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
