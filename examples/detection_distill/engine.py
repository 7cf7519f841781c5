"""The training loop for one epoch and COCO evaluation."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterable

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from tqdm import tqdm

from . import utils
from .coco_eval import coco_evaluate, to_coco_results
from .distill import distill_forward


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; raised on every rank at the same step."""


def amp_dtype_of(args: argparse.Namespace) -> torch.dtype | None:
    """The autocast dtype chosen by ``--amp`` / ``--amp-dtype`` (``None`` without ``--amp``)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[args.amp_dtype] if args.amp else None


def _to_device(
    images: Iterable[torch.Tensor], targets: Iterable[dict], device: torch.device
) -> tuple[list[torch.Tensor], list[dict]]:
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]
    return images, targets


def train_one_epoch(
    model: nn.Module,
    teacher: FasterRCNN | None,
    optimizer: torch.optim.Optimizer,
    data_loader: torch.utils.data.DataLoader,
    device: torch.device,
    epoch: int,
    step: int,
    args: argparse.Namespace,
    scaler: torch.amp.GradScaler | None = None,
    logger: utils.JsonlLogger | None = None,
) -> int:
    """Train ``model`` (a ``DistillationStudent``, maybe DDP-wrapped) for one epoch.

    The first epoch starts with a linear learning-rate warm-up, as torchvision's
    references. At most ``args.max_iters`` iterations are run when it is set.
    Losses are averaged over processes before logging and the finiteness check.

    Args:
        model: the student (and KD loss) to train.
        teacher: frozen teacher in eval mode, or ``None`` without distillation.
        optimizer: optimiser of the student's (and adapters') parameters.
        data_loader: training batches ``(images, targets)``.
        device: where the models live.
        epoch: epoch index (0-based).
        step: optimiser steps done before this epoch.
        args: the parsed training arguments (``amp``, ``clip_grad_norm``, ``print_freq``, ...).
        scaler: gradient scaler for fp16 autocast, else ``None``.
        logger: JSON-lines log for per-iteration records.

    Returns:
        The step count after this epoch.

    Raises:
        NonFiniteLossError: when the summed loss is NaN or infinite.
    """
    model.train()
    num_iters = len(data_loader) if args.max_iters is None else min(len(data_loader), args.max_iters)
    warmup = None
    warmup_iters = min(args.warmup_iters, num_iters - 1)
    if epoch == 0 and warmup_iters > 0:
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=args.warmup_factor, total_iters=warmup_iters)
    params = [p for p in model.parameters() if p.requires_grad]
    amp_dtype = amp_dtype_of(args)
    # Seconds per iteration (data, forward, backward, step) since the previous log record.
    window_start, window_steps = time.perf_counter(), 0
    bar = tqdm(total=num_iters, desc=f"epoch {epoch}", disable=not utils.is_main_process(), dynamic_ncols=True)
    for i, (images, targets) in enumerate(data_loader):
        if i == num_iters:
            break
        images, targets = _to_device(images, targets, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            losses, kd_levels = distill_forward(model, teacher, images, targets)
            loss = sum(losses.values())
        logged = utils.reduce_dict({**losses, **{f"kd/{k}": v for k, v in kd_levels.items()}})
        loss_value = sum(v for k, v in logged.items() if k.startswith("loss")).item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"loss is {loss_value} at epoch {epoch}, step {step}: "
                + ", ".join(f"{k}={v.item():.4g}" for k, v in logged.items())
                + "; try a lower --lr, --clip-grad-norm, or a smaller --kd-weight"
            )

        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if args.clip_grad_norm is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(params, args.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if args.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, args.clip_grad_norm)
            optimizer.step()
        if warmup is not None:
            warmup.step()
        step += 1
        window_steps += 1

        if logger is not None and (step % args.print_freq == 0 or i == num_iters - 1):
            now = time.perf_counter()
            logger.log({
                "type": "train", "epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"], "loss": loss_value,
                "s_per_iter": (now - window_start) / window_steps, **logged,
            })
            window_start, window_steps = now, 0
        bar.set_postfix(loss=f"{loss_value:.3f}", **({"kd": f"{logged['loss_kd'].item():.3f}"} if "loss_kd" in logged else {}))
        bar.update()
    bar.close()
    return step


@torch.no_grad()
def evaluate(detector: FasterRCNN, data_loader: torch.utils.data.DataLoader, device: torch.device) -> dict[str, float]:
    """COCO box mAP of ``detector`` on ``data_loader`` (whose dataset has a ``coco`` ground truth).

    Runs in fp32, as torchvision's references: under autocast torchvision would
    decode the boxes in reduced precision. Under ``torchrun`` each process runs its
    shard; the results are gathered and scored once (see :func:`coco_eval.coco_evaluate`).

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}``, the same on every rank.
    """
    detector.eval()
    results: dict[int, list[dict]] = {}
    for images, targets in tqdm(data_loader, desc="eval", disable=not utils.is_main_process(), dynamic_ncols=True):
        images, _ = _to_device(images, [], device)
        outputs = detector(images)
        for target, output in zip(targets, outputs):
            results[target["image_id"]] = to_coco_results(target["image_id"], output)
    return coco_evaluate(data_loader.dataset.coco, results, verbose=utils.is_main_process())
