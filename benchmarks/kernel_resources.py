"""Compile the SSIM kernels for an NVIDIA GPU without one and report their resources.

Triton lowers each kernel variant to PTX, its bundled ptxas assembles it for the chosen
architecture, and cuobjdump reads registers per thread, spill stack and shared memory
from the cubin. This is what can be known about the kernels' occupancy on a machine
with no GPU; timings need the GPU (``python -m benchmarks.run --device cuda``).

    python benchmarks/kernel_resources.py            # table, sm_90 (H100/H200)
    python benchmarks/kernel_resources.py --json     # rows as JSON
Must run without TRITON_INTERPRET (the interpreter replaces the compiler).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fastssim.kernels import ssim as kernels

_POINTERS = {"table_ptr": "*i64", "taps_ptr": "*fp32"}
_CONSTANTS = {"c1": "fp32", "c2": "fp32", "sqrt_eps": "fp32"}
_COMPONENTS = {"lcs": dict(USE_L=True, USE_C=True, USE_S=True),
               "s": dict(USE_L=False, USE_C=False, USE_S=True),
               "lc": dict(USE_L=True, USE_C=True, USE_S=False)}


def variants():
    """(kernel, description, signature, constexprs) for the variants that matter."""
    for dtype, padding, comps in [(tl.float32, "reflect", "lcs"), (tl.bfloat16, "reflect", "lcs"),
                                  (tl.float16, "valid", "lcs"), (tl.float32, "zeros", "s")]:
        layout = dict(NUM_LEVELS=5, RADIUS=5, BLOCK=kernels.block_size(5), BLOCK_W=kernels.BLOCK_W,
                      PADDING=kernels.PADDING_CODES[padding], DTYPE=dtype)
        name = f"{dtype}, {padding}, {comps}"
        yield (kernels.ssim_forward_kernel, name,
               {**_POINTERS, "partial_ptr": "*fp32", **_CONSTANTS},
               {**layout, **_COMPONENTS[comps], "STORE_MAP": False})
        yield (kernels.ssim_coef_kernel, name + ", dx",
               {**_POINTERS, "coef_ptr": "*fp32", **_CONSTANTS},
               {**layout, **_COMPONENTS[comps], "GRAD_PER_PIXEL": False, "NEED_X": True, "NEED_Y": False})
        yield (kernels.ssim_grad_kernel, name + ", dx",
               {**_POINTERS, "coef_ptr": "*fp32"}, {**layout, "NEED_X": True, "NEED_Y": False})
    layout = dict(NUM_LEVELS=1, RADIUS=7, BLOCK=kernels.block_size(7), BLOCK_W=kernels.BLOCK_W,
                  PADDING=1, DTYPE=tl.float32)
    yield (kernels.ssim_coef_kernel, "fp32, reflect, lcs, 15x15, map grad, dx+dy",
           {**_POINTERS, "coef_ptr": "*fp32", **_CONSTANTS},
           {**layout, **_COMPONENTS["lcs"], "GRAD_PER_PIXEL": True, "NEED_X": True, "NEED_Y": True})
    yield (kernels.ssim_grad_kernel, "fp32, reflect, 15x15, dx+dy",
           {**_POINTERS, "coef_ptr": "*fp32"}, {**layout, "NEED_X": True, "NEED_Y": True})


def _cuobjdump() -> Path:
    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def resources(arch: int) -> list[dict]:
    target = GPUTarget("cuda", arch, 32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        for fn, name, signature, constexprs in variants():
            warps = kernels.NUM_WARPS
            source = ASTSource(fn=fn, signature={**signature, **{k: "constexpr" for k in constexprs}},
                               constexprs=constexprs)
            compiled = triton.compile(source, target=target, options={"num_warps": warps})
            cubin.write_bytes(compiled.asm["cubin"])
            usage = subprocess.run([str(_cuobjdump()), "--dump-resource-usage", str(cubin)],
                                   capture_output=True, text=True, check=True).stdout
            fields = dict(item.split(":", 1) for line in usage.splitlines() if "REG:" in line
                          for item in line.split())
            rows.append({"kernel": fn.__name__, "variant": name, "block": constexprs["BLOCK"],
                         "num_warps": warps, "registers": int(fields["REG"]),
                         "spill_stack_bytes": int(fields["STACK"]),
                         "shared_bytes": int(fields["SHARED"])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for H100")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("unset TRITON_INTERPRET: the interpreter does not compile kernels")
    rows = resources(args.arch)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"sm_{args.arch}, triton {triton.__version__}")
    print("| kernel | variant | block | warps | registers | spill stack (B) | shared (B) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kernel']} | {r['variant']} | {r['block']} | {r['num_warps']} | {r['registers']} "
              f"| {r['spill_stack_bytes']} | {r['shared_bytes']} |")


if __name__ == "__main__":
    main()
