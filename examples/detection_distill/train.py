"""Train a Faster R-CNN student, optionally distilling a frozen teacher's FPN features.

One GPU (teacher: torchvision's COCO Faster R-CNN R50-FPN v2, student: R50-FPN
from ImageNet weights, SSIM distillation with lambda = 2)::

    python -m examples.detection_distill.train --data-path /data/coco \\
        --teacher fasterrcnn_resnet50_fpn_v2 --teacher-weights fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth \\
        --student fasterrcnn_resnet50_fpn --backbone-weights resnet50-0676ba61.pth \\
        --kd ssim --kd-weight 2 --amp --lr 0.0025 --output-dir runs/r50_ssim

Eight GPUs: the same arguments without ``--lr`` (its default 0.02 is for 8 x 2
images; ``--batch-size`` is per GPU) after
``torchrun --nproc_per_node 8 -m examples.detection_distill.train``.

Evaluate a checkpoint::

    python -m examples.detection_distill.train --data-path /data/coco --eval-only --resume runs/r50_ssim/checkpoint.pth

(the model name comes from the checkpoint).

Each epoch writes ``checkpoint.pth`` (model, optimizer, scheduler, scaler, args,
epoch, step; ``model`` alone is a plain torchvision state dict, usable as
``--teacher-weights`` or ``--student-weights``) and appends losses and COCO
metrics to ``log.jsonl`` in ``--output-dir``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler
from torchvision.models.detection import FasterRCNN

from . import utils
from .coco_utils import coco_image_sizes, coco_num_classes, get_coco
from .distill import KD_MODES, DistillationStudent, build_feature_loss, check_feature_loss_fits, probe_features, smallest_batch
from .engine import amp_dtype_of, evaluate, train_one_epoch
from .group_by_aspect_ratio import GroupedBatchSampler, create_aspect_ratio_groups
from .models import MODELS, build_detector, check_model_name, load_detector_state


DEFAULT_STUDENT = "fasterrcnn_resnet50_fpn"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The command-line interface; ``compare.py`` and ``demo.py`` reuse it to build ``args`` for :func:`main`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=add_help)
    models = ", ".join(MODELS)

    data = parser.add_argument_group("data")
    data.add_argument("--data-path", required=True, help="COCO-format root with annotations/instances_<split>.json and <split>/")
    data.add_argument("--train-set", default="train2017", help="training split name (default: %(default)s)")
    data.add_argument("--val-set", default="val2017", help="validation split name (default: %(default)s)")
    data.add_argument("--hflip-prob", type=float, default=0.5, help="horizontal flip probability in training")
    data.add_argument("--aspect-ratio-group-factor", type=int, default=3, help="aspect-ratio bins per side of 1; -1 disables grouping")
    data.add_argument("--workers", type=int, default=min(4, utils.usable_cores()),
                      help="data loading processes per process (default: the CPU cores available to this process, at most 4)")

    model = parser.add_argument_group("models")
    model.add_argument("--student", help=f"student model: {models} (default: the model stored in --resume, else {DEFAULT_STUDENT})")
    model.add_argument("--teacher", default="fasterrcnn_resnet50_fpn_v2", help=f"teacher model: {models}")
    model.add_argument("--student-weights", help="local file: whole-detector weights to start the student from")
    model.add_argument("--teacher-weights", help="local file: whole-detector weights of the teacher (needed for useful KD)")
    model.add_argument("--backbone-weights", help="local file: ImageNet classifier weights for the student backbone")
    model.add_argument("--trainable-backbone-layers", type=int, help="student backbone stages to train (default: 3 if pretrained, else all)")
    model.add_argument("--min-size", type=int, default=800, help="shorter image side after resizing (both models)")
    model.add_argument("--max-size", type=int, default=1333, help="longer image side limit after resizing")
    model.add_argument("--box-batch-size-per-image", type=int, default=512, help="RoIs sampled per training image; lower is faster on CPU")
    model.add_argument("--rpn-pre-nms-top-n-train", type=int, default=2000, help="RPN proposals per level before NMS in training")
    model.add_argument("--rpn-post-nms-top-n-train", type=int, default=2000, help="proposals per image after NMS in training")
    model.add_argument("--rpn-post-nms-top-n-test", type=int, default=1000, help="proposals per image at evaluation; lower is faster on CPU")

    kd = parser.add_argument_group("distillation")
    kd.add_argument("--kd", default="ssim", choices=KD_MODES, help="feature loss on the FPN outputs (default: %(default)s)")
    kd.add_argument("--kd-weight", type=float, default=2.0, help="lambda in L = L_det + lambda * L_feat (default: %(default)s)")
    kd.add_argument("--kd-adapter", action="store_true", help="1x1 conv adapters on the student levels even when channels match")
    kd.add_argument("--kd-window", type=int, default=11, help="SSIM Gaussian window size (odd)")
    kd.add_argument("--kd-padding", default="reflect", choices=("reflect", "zeros", "valid"),
                    help="SSIM padding; reflect needs every FPN side > window // 2 ('pool' is input/64: use zeros for small images)")
    kd.add_argument("--kd-normalize", default="level", choices=("level", "sample", "channel", "none"),
                    help="min-max normalisation scope before SSIM")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:N")
    opt.add_argument("--batch-size", type=int, default=2, help="images per GPU (per process)")
    opt.add_argument("--epochs", type=int, default=26)
    opt.add_argument("--opt", default="sgd", choices=("sgd", "adamw"), help="optimiser; AdamW trains from scratch faster (default: %(default)s)")
    opt.add_argument("--lr", type=float, default=0.02, help="0.02 for SGD with 16 images per step; scale linearly")
    opt.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    opt.add_argument("--weight-decay", type=float, default=1e-4)
    opt.add_argument("--lr-schedule", default="multistep", choices=("multistep", "cosine"),
                     help="after warm-up: decay by --lr-gamma at --lr-steps, or cosine to zero over --epochs (default: %(default)s)")
    opt.add_argument("--lr-steps", type=int, nargs="+", default=[16, 22], help="epochs at which the multistep schedule decays")
    opt.add_argument("--lr-gamma", type=float, default=0.1)
    opt.add_argument("--warmup-iters", type=int, default=1000, help="linear warm-up iterations in the first epoch")
    opt.add_argument("--warmup-factor", type=float, default=1e-3, help="learning-rate factor at the first iteration")
    opt.add_argument("--clip-grad-norm", type=float, help="clip the gradient norm to this value")
    opt.add_argument("--amp", action="store_true", help="mixed-precision training (backbones under autocast; heads and evaluation stay fp32)")
    opt.add_argument("--amp-dtype", default="bf16", choices=("bf16", "fp16"), help="fp16 adds a GradScaler")
    opt.add_argument("--seed", type=int, default=42)
    opt.add_argument("--max-iters", type=int, help="stop each epoch after this many iterations (smoke tests, quick comparisons)")

    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", default="runs/detection_distill", help="checkpoint.pth and log.jsonl go here")
    run.add_argument("--resume", help="checkpoint.pth to continue from (model, optimizer, scheduler, scaler, epoch, step)")
    run.add_argument("--eval-only", action="store_true", help="only evaluate --resume / --student-weights and return")
    run.add_argument("--eval-freq", type=int, default=1, help="evaluate every N epochs (and always after the last)")
    run.add_argument("--print-freq", type=int, default=20, help="log training losses every N steps")
    return parser


def validate_args(args: argparse.Namespace) -> None:
    """Fail fast, naming the argument, before any data or model is loaded."""
    data_path = Path(args.data_path)
    if not data_path.is_dir():
        raise FileNotFoundError(
            f"--data-path {data_path}: no such directory; "
            "make a synthetic data set with: python -m examples.detection_distill.make_synthetic --out DIR"
        )
    if args.student is not None:  # None: resolved from --resume in main()
        check_model_name(args.student, "--student")
    if args.kd != "none":
        check_model_name(args.teacher, "--teacher")
    for flag in ("student_weights", "teacher_weights", "backbone_weights", "resume"):
        path = getattr(args, flag)
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"--{flag.replace('_', '-')} {path}: no such file")
    positive = ("batch_size", "epochs", "min_size", "max_size", "box_batch_size_per_image", "rpn_pre_nms_top_n_train",
                "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test",
                "eval_freq", "print_freq", "max_iters")
    for name in positive:
        value = getattr(args, name)
        if value is not None and value < 1:  # only --max-iters may be None
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.kd_weight < 0:
        raise ValueError(f"--kd-weight must be >= 0, got {args.kd_weight}")
    if args.eval_only and args.resume is None and args.student_weights is None:
        raise ValueError("--eval-only needs weights to evaluate: --resume CHECKPOINT or --student-weights FILE")


def resolve_student(requested: str | None, checkpoint: dict[str, Any] | None, resume: str | None) -> str:
    """The student model name: ``--student``, else the one a ``--resume`` checkpoint was trained as, else the default.

    Raises:
        ValueError: ``--student`` names another model than the checkpoint holds (its
            weights would not load); the message says which flag to pass.
    """
    stored = checkpoint.get("args", {}).get("student") if checkpoint is not None else None
    if requested is None:
        return stored or DEFAULT_STUDENT
    if stored is not None and requested != stored:
        raise ValueError(f"--resume {resume} holds a {stored} model, not --student {requested}; pass --student {stored} or leave --student out")
    return requested


def build_models(
    args: argparse.Namespace, num_classes: int, train_set: Dataset | None
) -> tuple[FasterRCNN, FasterRCNN | None, nn.Module | None]:
    """The student, and with ``--kd`` other than none the frozen teacher and the feature loss, on the CPU.

    The feature loss is run once on the FPN levels of the smallest batch the
    training images make (the most elongated image), so a level too small for
    ``--kd-window`` / ``--kd-padding`` stops here, before any training.

    Args:
        args: parsed arguments of :func:`get_args_parser`.
        num_classes: classes of the data, background included.
        train_set: the training split (``None`` with ``--eval-only``).

    Returns:
        ``(student, teacher, feature_loss)``; the last two are ``None`` without distillation.
    """
    detector_kwargs = dict(
        min_size=args.min_size,
        max_size=args.max_size,
        box_batch_size_per_image=args.box_batch_size_per_image,
        rpn_pre_nms_top_n_train=args.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=args.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=args.rpn_post_nms_top_n_test,
    )
    student = build_detector(
        args.student,
        num_classes=num_classes,
        weights=args.student_weights,
        backbone_weights=args.backbone_weights,
        trainable_backbone_layers=args.trainable_backbone_layers,
        **detector_kwargs,
    )
    if args.kd == "none" or args.eval_only:
        return student, None, None
    if args.teacher_weights is None:
        warnings.warn("--teacher-weights not given: distilling from a randomly initialised teacher (smoke tests only)")
    teacher = build_detector(
        args.teacher, num_classes=None if args.teacher_weights else num_classes, weights=args.teacher_weights, **detector_kwargs
    )
    teacher.eval().requires_grad_(False)
    student_features, teacher_features = probe_features(student, teacher, smallest_batch(student, coco_image_sizes(train_set)))
    feature_loss = build_feature_loss(
        args, {k: f.shape[1] for k, f in student_features.items()}, {k: f.shape[1] for k, f in teacher_features.items()}
    )
    check_feature_loss_fits(feature_loss, student_features, teacher_features, args)
    return student, teacher, feature_loss


def _data_loaders(
    args: argparse.Namespace, train_set: Dataset | None, val_set: Dataset
) -> tuple[DataLoader | None, DataLoader]:
    """Aspect-ratio grouped training batches (sharded under torchrun) and one image per evaluation batch."""
    common: dict[str, Any] = dict(num_workers=args.workers, collate_fn=utils.collate_fn, pin_memory=args.device.startswith("cuda"))
    val_sampler = DistributedSampler(val_set, shuffle=False) if args.distributed else SequentialSampler(val_set)
    val_loader = DataLoader(val_set, batch_size=1, sampler=val_sampler, **common)
    if train_set is None:
        return None, val_loader
    if args.distributed:
        train_sampler = DistributedSampler(train_set, seed=args.seed)
    else:
        train_sampler = RandomSampler(train_set, generator=torch.Generator().manual_seed(args.seed))
    if args.aspect_ratio_group_factor >= 0:
        group_ids = create_aspect_ratio_groups([w / h for h, w in coco_image_sizes(train_set)], args.aspect_ratio_group_factor)
        batch_sampler = GroupedBatchSampler(train_sampler, group_ids, args.batch_size)
    else:
        batch_sampler = BatchSampler(train_sampler, args.batch_size, drop_last=True)
    if len(batch_sampler) == 0:
        raise ValueError(
            f"--batch-size {args.batch_size}: the training split has only {len(train_sampler)} usable images per process"
        )
    return DataLoader(train_set, batch_sampler=batch_sampler, **common), val_loader


class Setup(NamedTuple):
    """What :func:`prepare` loads and builds before training."""

    checkpoint: dict[str, Any] | None
    train_set: Dataset | None
    val_set: Dataset
    student: FasterRCNN
    teacher: FasterRCNN | None
    feature_loss: nn.Module | None


def prepare(args: argparse.Namespace) -> Setup:
    """Everything before training that can fail on a bad setting: flags, ``--resume``, data, models, KD level sizes.

    Sets ``args.student`` (see :func:`resolve_student`) and, under ``torchrun``,
    the distributed fields of ``args``; seeds everything, so the student's initial
    weights depend only on ``--seed``. ``compare.py`` calls it for every mode before
    the first run trains.
    """
    validate_args(args)
    checkpoint = torch.load(args.resume, map_location="cpu", weights_only=True) if args.resume else None
    args.student = resolve_student(args.student, checkpoint, args.resume)
    utils.init_distributed_mode(args)
    utils.seed_everything(args.seed)
    val_set = get_coco(args.data_path, args.val_set, train=False)
    train_set = None if args.eval_only else get_coco(args.data_path, args.train_set, train=True, hflip_prob=args.hflip_prob)
    return Setup(checkpoint, train_set, val_set, *build_models(args, coco_num_classes(val_set), train_set))


def main(args: argparse.Namespace) -> dict[str, float]:
    """Train (or with ``--eval-only`` just evaluate) and return the last COCO metrics.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` of the final evaluation.

    Raises:
        FileNotFoundError, ValueError: bad arguments, naming the flag.
        engine.NonFiniteLossError: the training loss became NaN or infinite.
    """
    checkpoint, train_set, val_set, student, teacher, feature_loss = prepare(args)
    device = torch.device(args.device)
    output_dir = Path(args.output_dir)
    if utils.is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
    # A run from scratch starts a new log; --resume and --eval-only add to the existing one.
    logger = utils.JsonlLogger(output_dir / "log.jsonl", fresh=args.resume is None and not args.eval_only)
    train_loader, val_loader = _data_loaders(args, train_set, val_set)
    student.to(device)
    if teacher is not None:
        teacher.to(device)
    model = DistillationStudent(student, feature_loss).to(device)
    model_without_ddp = model
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    params = [p for p in model.parameters() if p.requires_grad]
    if args.opt == "adamw":
        optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if args.lr_schedule == "cosine":
        lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    else:
        lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=args.lr_steps, gamma=args.lr_gamma)
    amp_dtype = amp_dtype_of(args)
    # bf16 has fp32's exponent range; only fp16 gradients need loss scaling.
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    start_epoch, step = 0, 0
    if checkpoint is not None:
        load_detector_state(model_without_ddp.detector, checkpoint["model"], f"--resume {args.resume}", args.student)
        if feature_loss is not None and checkpoint.get("feature_loss"):
            feature_loss.load_state_dict(checkpoint["feature_loss"])
        if not args.eval_only:
            optimizer.load_state_dict(checkpoint["optimizer"])
            lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
            if scaler is not None and checkpoint.get("scaler"):
                scaler.load_state_dict(checkpoint["scaler"])
            start_epoch, step = checkpoint["epoch"] + 1, checkpoint["step"]
            if start_epoch >= args.epochs:
                raise ValueError(
                    f"--resume {args.resume} already finished epoch {start_epoch - 1} of --epochs {args.epochs}; "
                    "raise --epochs to train on, or use --eval-only"
                )

    if args.eval_only:
        metrics = evaluate(model_without_ddp.detector, val_loader, device)
        logger.log({"type": "eval", "epoch": None, "step": step, **metrics})
        return metrics

    if utils.is_main_process():
        if teacher is None:  # e.g. a teacher's own training: not called a student
            what = f"training {args.student} without distillation"
        else:
            what = (f"training student {args.student} with {args.kd} distillation (lambda {args.kd_weight}) "
                    f"from teacher {args.teacher} ({args.teacher_weights or 'random init'})")
        print(f"{what}, {len(train_set)} train / {len(val_set)} val images, {utils.get_world_size()} process(es) on {device}")
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, args.epochs):
        if args.distributed:
            train_loader.batch_sampler.sampler.set_epoch(epoch)
        step = train_one_epoch(model, teacher, optimizer, train_loader, device, epoch, step, args, scaler, logger)
        lr_scheduler.step()
        state = {
            "model": model_without_ddp.detector.state_dict(),
            "feature_loss": feature_loss.state_dict() if feature_loss is not None else {},
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "args": vars(args),
            "epoch": epoch,
            "step": step,
        }
        utils.save_on_master(state, output_dir / "checkpoint.pth")
        if (epoch + 1) % args.eval_freq == 0 or epoch == args.epochs - 1:
            metrics = evaluate(model_without_ddp.detector, val_loader, device)
            logger.log({"type": "eval", "epoch": epoch, "step": step, **metrics})
    return metrics


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    finally:
        utils.cleanup_distributed()
