"""Compile every kernel variant for a Hopper GPU without a GPU.

The interpreter runs the kernels as NumPy code and so misses what only the compiler
checks (constexpr rules, types, layouts). Here Triton lowers each kernel to PTX and
ptxas assembles it for sm_90, exactly as on an H100, in a subprocess without
TRITON_INTERPRET (set for the rest of the suite). Register use, spills and FMA counts
are reported by benchmarks/kernel_resources.py from the same compiles.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "kernel_resources.py"


def test_all_kernel_variants_compile_for_sm90():
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--json", "--arch", "90", "--paddings", "reflect",
                           "zeros"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = json.loads(done.stdout)
    assert {row["kernel"] for row in rows} == {"ssim_stream_kernel", "gradient_finish_kernel"}
    assert all(row["registers"] > 0 for row in rows)
    forward = [row for row in rows if row["path"] in ("forward", "map")]
    # Row streaming: at most 2x the window's taps per moment and pass (5 moments, 2 passes).
    assert all(row["spill_stack_bytes"] == 0 and row["fma_per_pixel"] <= 2 * 2 * 5 * row["window"]
               for row in forward), forward
