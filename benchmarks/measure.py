"""Timing, memory and roofline helpers shared by the benchmark runner.

On CUDA, times come from CUDA events around each repetition (after warm-up,
with the L2 cache flushed before each one); on the CPU from
``time.perf_counter`` (CPU ops are synchronous, so no synchronisation is
needed). The implementations compared at one case are timed round-robin, one
repetition of each in turn, so that drift in the host's speed hits all alike.
Peak memory is only measurable on CUDA.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

#: Flop per element of one tensor for an SSIM forward and for forward + backward, at
#: the 11x11 window: two per FMA counted in the kernels compiled for sm_90
#: (benchmarks/NOTES.md: 120 FMA per output pixel forward, 227 for the fused
#: forward-with-gradient of the training path, zeros/valid padding).
FLOP_PER_ELEMENT = {"fwd": 240, "fwdbwd": 454}

#: Dense FP32 (CUDA-core, non-tensor-core) peaks in TFLOP/s from NVIDIA's
#: product datasheets, matched in order as case-insensitive substrings of
#: ``torch.cuda.get_device_name()`` (specific names before their prefixes).
FP32_PEAK_TFLOPS: list[tuple[str, float]] = [
    ("H200 NVL", 60.0),
    ("H200", 67.0),  # H200 SXM; also GH200, whose GPU is an H100 SXM
    ("H100 PCIe", 51.0),
    ("H100 NVL", 60.0),
    ("H100", 67.0),  # H100 SXM5 ("NVIDIA H100 80GB HBM3")
    ("A100", 19.5),
    ("L40S", 91.6),
    ("L40", 90.5),
    ("L4", 30.3),
    ("A10", 31.2),
]
FP32_PEAK_SOURCE = "NVIDIA product datasheet, dense FP32 (non-tensor-core)"


@dataclass(frozen=True)
class DeviceInfo:
    """What the results file says about the machine."""

    type: str  # "cuda" or "cpu"
    name: str
    threads: int
    peak_fp32_tflops: float | None
    peak_fp32_source: str


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo, falling back to ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_info(device: torch.device) -> DeviceInfo:
    """Name the device and look up its FP32 peak (None where not tabulated)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in FP32_PEAK_TFLOPS:
            if key.lower() in name.lower():
                return DeviceInfo("cuda", name, torch.get_num_threads(), tflops, FP32_PEAK_SOURCE)
        return DeviceInfo("cuda", name, torch.get_num_threads(), None, "unknown: not in the table")
    return DeviceInfo(
        "cpu",
        f"CPU {cpu_model()}",
        torch.get_num_threads(),
        None,
        "unknown: no table for CPUs, so the floor is the memory term alone",
    )


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _L2Flusher:
    """Overwrites a buffer larger than any current GPU's L2 cache.

    Without this, the inputs of small cases stay in L2 from one repetition to
    the next and the timings overstate what a training step (which touches
    much more memory in between) would see.
    """

    def __init__(self, device: torch.device, nbytes: int = 256 << 20) -> None:
        self._buffer = torch.empty(nbytes, dtype=torch.uint8, device=device)

    def __call__(self) -> None:
        self._buffer.zero_()


def time_interleaved_ms(
    fns: dict[str, Callable[[], None]], device: torch.device, warmup: int, reps: int
) -> dict[str, list[float] | Exception]:
    """Time several functions round-robin: ``reps`` rounds, each calling every function once.

    Interleaving puts every function under the same conditions. On the 2-core development
    machine (a VM) the host's speed drifts: the same implementation's median moved by up to 50%
    between runs minutes apart, so timing one function after another would rank them partly
    by when they ran. Each round starts one function further on, so that no function always
    follows the same one (and the memory it left). Each function is warmed up ``warmup``
    times first. A function that raises is dropped from the rounds, and its exception (without
    its traceback, which would keep the failed call's tensors alive) is its result.

    Returns:
        Per name, the ``reps`` timings in milliseconds, or the exception it raised.
    """
    results: dict[str, list[float] | Exception] = {}
    running: list[str] = []

    def failed(name: str, exc: Exception) -> None:
        results[name] = exc.with_traceback(None)
        if name in running:
            running.remove(name)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # release what an out-of-memory error left behind

    for name, fn in fns.items():
        try:
            for _ in range(warmup):
                fn()
            running.append(name)
            results[name] = []
        except Exception as exc:  # recorded: a failing implementation is a result
            failed(name, exc)
    cuda = device.type == "cuda"
    flush = _L2Flusher(device) if cuda else None
    events: dict[str, list[tuple[torch.cuda.Event, torch.cuda.Event]]] = {name: [] for name in running}
    synchronize(device)
    for rep in range(reps):
        shift = rep % max(1, len(running))
        for name in running[shift:] + running[:shift]:
            try:
                if cuda:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    flush()
                    start.record()
                    fns[name]()
                    end.record()
                    events[name].append((start, end))
                else:
                    start = time.perf_counter()
                    fns[name]()
                    results[name].append((time.perf_counter() - start) * 1e3)
            except Exception as exc:
                failed(name, exc)
    if cuda:
        synchronize(device)
        for name in running:
            results[name] = [start.elapsed_time(end) for start, end in events[name]]
    return results


def time_ms(fn: Callable[[], None], device: torch.device, warmup: int, reps: int) -> list[float]:
    """Run ``fn`` ``warmup`` times, then return ``reps`` timings in milliseconds."""
    times = time_interleaved_ms({"fn": fn}, device, warmup, reps)["fn"]
    if isinstance(times, Exception):
        raise times
    return times


def peak_extra_mb(fn: Callable[[], None], device: torch.device) -> float | None:
    """Peak memory ``fn`` allocates beyond what is live before it, in MiB.

    Returns None on the CPU, where PyTorch keeps no allocation statistics.
    """
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def copy_bandwidth_gbps(device: torch.device, nbytes: int = 1 << 30, reps: int = 10) -> float:
    """Measured device-memory bandwidth of a large tensor copy, in GB/s.

    A copy reads and writes every byte once, so it moves ``2 * nbytes``; this
    is the bandwidth a memory-bound kernel can actually reach on this device,
    a fairer floor than the datasheet figure.
    """
    if device.type != "cuda":
        nbytes = min(nbytes, 256 << 20)  # larger than the CPU caches, quick on 2 cores
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    times = time_ms(lambda: dst.copy_(src), device, warmup=2, reps=reps)
    return 2 * nbytes / (statistics.median(times) * 1e-3) / 1e9


def floor_bytes(elements: int, itemsize: int, mode: str) -> int:
    """Bytes that must move: read x and y once, plus write dx once for fwdbwd."""
    tensors = 3 if mode == "fwdbwd" else 2
    return tensors * elements * itemsize


def floor_ms(
    elements: int, itemsize: int, mode: str, bandwidth_gbps: float, peak_tflops: float | None
) -> float:
    """The physical floor in ms: the larger of the memory and the FP32 flop time."""
    memory_ms = floor_bytes(elements, itemsize, mode) / (bandwidth_gbps * 1e9) * 1e3
    if peak_tflops is None:
        return memory_ms
    flop_ms = FLOP_PER_ELEMENT[mode] * elements / (peak_tflops * 1e12) * 1e3
    return max(memory_ms, flop_ms)
