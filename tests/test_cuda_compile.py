"""Compile every kernel variant for a Hopper GPU without a GPU.

The interpreter runs the kernels as NumPy code and so misses what only the compiler
checks (constexpr rules, types, layouts). Here Triton lowers each kernel to PTX and
ptxas assembles it for sm_90, exactly as on an H100, in a subprocess without
TRITON_INTERPRET (set for the rest of the suite). Register use and spills are
reported by benchmarks/kernel_resources.py from the same compiles.
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
    done = subprocess.run([sys.executable, str(SCRIPT), "--json", "--arch", "90"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = json.loads(done.stdout)
    kernels = {row["kernel"] for row in rows}
    assert kernels == {"ssim_forward_kernel", "ssim_coef_kernel", "ssim_grad_kernel"}
    assert all(row["registers"] > 0 for row in rows)
