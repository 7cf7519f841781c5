"""Distributed helpers, seeding, checkpoint writing and the JSON-lines log.

Shaped after torchvision's ``references/detection/utils.py``; progress display is
left to tqdm in ``engine.py`` rather than a metric logger that prints.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def is_dist_avail_and_initialized() -> bool:
    """True inside an initialised ``torch.distributed`` process group."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    """Rank of this process (0 when not distributed)."""
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process() -> bool:
    """Only rank 0 logs, draws progress bars and writes files."""
    return get_rank() == 0


def init_distributed_mode(args: argparse.Namespace) -> None:
    """Join the process group that ``torchrun`` describes in RANK / WORLD_SIZE / LOCAL_RANK.

    Sets ``args.distributed``, ``args.rank``, ``args.world_size`` and, on CUDA, pins
    this process to ``cuda:LOCAL_RANK`` (``args.device`` is rewritten accordingly).
    The backend is NCCL on CUDA and gloo on CPU. Without those variables the run
    is a single process. Calling it again in the same process (``compare.py``
    runs ``train.main`` several times) reuses the existing group.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        args.distributed, args.rank, args.world_size = False, 0, 1
        return
    args.distributed = True
    args.rank = int(os.environ["RANK"])
    args.world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        args.device = f"cuda:{local_rank}"
    if not is_dist_avail_and_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", world_size=args.world_size, rank=args.rank)
        dist.barrier()


def cleanup_distributed() -> None:
    """Leave the process group (entry points call this once, at exit)."""
    if is_dist_avail_and_initialized():
        dist.destroy_process_group()


def reduce_dict(values: dict[str, torch.Tensor], average: bool = True) -> dict[str, torch.Tensor]:
    """Average (or sum) a dict of scalar tensors over all processes, for logging.

    Every process gets the same numbers, so a non-finite loss stops all ranks
    together instead of leaving the others waiting in the next all-reduce.
    """
    world_size = get_world_size()
    if world_size < 2:
        return values
    with torch.no_grad():
        names = sorted(values)  # the same order on every rank
        stacked = torch.stack([values[k].detach().float() for k in names])
        dist.all_reduce(stacked)
        if average:
            stacked /= world_size
        return dict(zip(names, stacked))


def all_gather_object(obj: Any) -> list[Any]:
    """Gather one picklable object from every process (a one-element list when not distributed)."""
    if get_world_size() < 2:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Send rank 0's object to every process."""
    if get_world_size() < 2:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def save_on_master(state: dict[str, Any], path: Path) -> None:
    """Write a checkpoint from rank 0 only; written to a temporary file first so a crash never leaves half a file."""
    if not is_main_process():
        return
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch: every rank builds the same initial model."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def collate_fn(batch: list[tuple[Any, Any]]) -> tuple[tuple[Any, ...], ...]:
    """Keep images as a tuple: detection models take lists of differently sized images."""
    return tuple(zip(*batch))


class JsonlLogger:
    """Append one JSON object per line to ``path`` (rank 0 only; other ranks write nothing).

    ``fresh=True`` empties an existing file first (a new run, not a resumed one).
    """

    def __init__(self, path: Path | None, fresh: bool = False) -> None:
        self.path = path if is_main_process() else None
        if self.path is not None and fresh:
            self.path.write_text("")

    def log(self, record: dict[str, Any]) -> None:
        """Write ``record``; tensors are turned into Python numbers."""
        if self.path is None:
            return
        clean = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in record.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean) + "\n")
