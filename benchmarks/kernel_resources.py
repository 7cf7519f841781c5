"""Compile the SSIM kernels for an NVIDIA GPU without one and report their resources.

Triton lowers each kernel variant to PTX, its bundled ptxas assembles it for the chosen
architecture, and cuobjdump reads registers per thread, spill stack and shared memory
from the cubin. The PTX gives the arithmetic: the stream kernel's thread handles one
column and walks down the rows, so the FMAs (``fma.rn.f32``) and other fp32 multiplies
and adds in its PTX are, to within the few outside the row loop, the work per column per
row step. Per output pixel that is scaled by the halo the tile computes and does not own
(2r rows of 128 for the forward, 4r rows and 2r of ``BLOCK_W`` columns for the gradient).
Static counts include branches taken only on border strips (reflect's column fold),
so reflect rows overstate interior work. This is what can be known about the kernels on
a machine with no GPU; timings need the GPU (``python -m benchmarks.run --device cuda``).

    python benchmarks/kernel_resources.py                  # table, sm_90 (H100/H200)
    python benchmarks/kernel_resources.py --windows 3 7 11 15
    python benchmarks/kernel_resources.py --json           # rows as JSON
Must run without TRITON_INTERPRET (the interpreter replaces the compiler).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fastssim.kernels import ssim as kernels

# Five levels (the FPN set), each a tuple of int64 fields (kernels._level_args).
_STREAM_SIGNATURE = {"levels": (("i64",) * kernels.NUM_FIELDS,) * 5, "taps_ptr": "*fp32",
                     "partial_ptr": "*fp32", "scratch_ptr": "*fp32", "num_tiles": "i32",
                     "rounds": "i32", "rows_per_tile": "i32",
                     "c1": "fp32", "c2": "fp32", "sqrt_eps": "fp32"}
_FINISH_SIGNATURE = {"d_ptr": "*fp32", "x_ptr": "*fp32", "out_ptr": "*fp32", "plane_ptr": "*fp32",
                     "channels": "i32", "height": "i32", "width": "i32", "sxn": "i64", "sxc": "i64",
                     "sxh": "i64", "sxw": "i64"}
_DTYPES = {"fp32": tl.float32, "bf16": tl.bfloat16, "fp16": tl.float16}

# The paths of the cost table: (name, constexprs of the stream kernel).
PATHS = {
    "forward": dict(GRAD=False, STORE_MAP=False, UPSTREAM=0, NEED_X=False, NEED_Y=False),
    "map": dict(GRAD=False, STORE_MAP=True, UPSTREAM=0, NEED_X=False, NEED_Y=False),
    "lean fwd+dx, normalised": dict(GRAD=True, STORE_MAP=False, UPSTREAM=0, NEED_X=True, NEED_Y=False,
                                    NORMALIZE=True),
    "bwd dx+dy, per-pixel": dict(GRAD=True, STORE_MAP=False, UPSTREAM=2, NEED_X=True, NEED_Y=True),
    "bwd dx, per-pixel": dict(GRAD=True, STORE_MAP=False, UPSTREAM=2, NEED_X=True, NEED_Y=False),
}


def variants(windows, dtypes, paddings):
    """(kernel, path, dtype, padding, window, signature, constexprs) for the reported variants."""
    for window in windows:
        for dtype in dtypes:
            for padding in paddings:
                for path, flags in PATHS.items():
                    constexprs = dict(RADIUS=window // 2, BLOCK_W=kernels.BLOCK_W,
                                      PADDING=kernels.PADDING_CODES[padding], DTYPE=_DTYPES[dtype],
                                      USE_L=True, USE_C=True, USE_S=True, **{"NORMALIZE": False, **flags})
                    constexprs["SCRATCH_FLOATS"] = kernels.scratch_floats(
                        window // 2, kernels.PADDING_CODES[padding], flags["GRAD"], flags["NEED_X"],
                        flags["NEED_Y"])
                    constexprs["PERSISTENT"] = kernels.persistent(flags["GRAD"], flags["UPSTREAM"],
                                                                  flags["NEED_X"], flags["NEED_Y"])
                    yield (kernels.ssim_stream_kernel, path, dtype, padding, window, _STREAM_SIGNATURE,
                           constexprs)
    for dtype in dtypes:
        yield (kernels.gradient_finish_kernel, "lean bwd (finish)", dtype, "-", 0,
               {**_FINISH_SIGNATURE, "d_ptr": f"*{dtype}", "x_ptr": f"*{dtype}", "out_ptr": f"*{dtype}"},
               dict(TIES=True, BLOCK=kernels.FINISH_BLOCK, DTYPE=_DTYPES[dtype]))


def _cuobjdump() -> Path:
    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def _per_pixel(count: int, constexprs: dict, window: int) -> float:
    """Scale a per-thread-per-row-step count to one owned output pixel (see the module doc)."""
    if "GRAD" not in constexprs:  # the elementwise finish: one element per thread
        return float(count)
    radius, rows = window // 2, kernels.ROWS_PER_TILE
    if constexprs["GRAD"]:
        return count * (rows + 4 * radius) / rows * kernels.BLOCK_W / (kernels.BLOCK_W - 2 * radius)
    return count * (rows + 2 * radius) / rows


def resources(arch: int, windows, dtypes, paddings) -> list[dict]:
    target = GPUTarget("cuda", arch, 32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        for fn, path, dtype, padding, window, signature, constexprs in variants(windows, dtypes, paddings):
            source = ASTSource(fn=fn, signature={**signature, **{k: "constexpr" for k in constexprs}},
                               constexprs=constexprs)
            compiled = triton.compile(source, target=target, options={"num_warps": kernels.NUM_WARPS})
            cubin.write_bytes(compiled.asm["cubin"])
            usage = subprocess.run([str(_cuobjdump()), "--dump-resource-usage", str(cubin)],
                                   capture_output=True, text=True, check=True).stdout
            fields = dict(item.split(":", 1) for line in usage.splitlines() if "REG:" in line
                          for item in line.split())
            ptx = compiled.asm["ptx"]
            fma = len(re.findall(r"\bfma\.rn\.f32\b", ptx))
            mul_add = len(re.findall(r"\b(?:mul|add|sub)\.(?:rn\.)?f32\b", ptx))
            rows.append({"kernel": fn.__name__, "path": path, "dtype": dtype, "padding": padding,
                         "window": window, "num_warps": kernels.NUM_WARPS,
                         "registers": int(fields["REG"]), "spill_stack_bytes": int(fields["STACK"]),
                         "shared_bytes": int(fields["SHARED"]), "ptx_fma": fma, "ptx_mul_add": mul_add,
                         "fma_per_pixel": round(_per_pixel(fma, constexprs, window), 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for H100")
    parser.add_argument("--windows", type=int, nargs="+", default=[11], help="window sizes (odd)")
    parser.add_argument("--dtypes", nargs="+", default=list(_DTYPES), choices=list(_DTYPES))
    parser.add_argument("--paddings", nargs="+", default=["reflect"], choices=list(kernels.PADDING_CODES))
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("unset TRITON_INTERPRET: the interpreter does not compile kernels")
    rows = resources(args.arch, args.windows, args.dtypes, args.paddings)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"sm_{args.arch}, triton {triton.__version__}, {kernels.NUM_WARPS} warps, "
          f"BLOCK_W {kernels.BLOCK_W}, {kernels.ROWS_PER_TILE} rows per tile")
    print("| kernel | path | dtype | padding | window | registers | spill stack (B) | PTX fma | "
          "PTX other mul/add | FMA per output pixel |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kernel']} | {r['path']} | {r['dtype']} | {r['padding']} | {r['window']} "
              f"| {r['registers']} | {r['spill_stack_bytes']} | {r['ptx_fma']} | {r['ptx_mul_add']} "
              f"| {r['fma_per_pixel']} |")


if __name__ == "__main__":
    main()
