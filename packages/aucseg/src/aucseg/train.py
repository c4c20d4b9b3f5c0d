"""A plain training loop (AdamW, linear warmup, poly decay) and dataset-level evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from aucseg.loss import AUCLoss, SegmentationLoss
from labcore import dist
from labcore.cli import UserError, progress
from labcore.metrics import ConfusionMatrix

__all__ = [
    "TrainConfig",
    "batch_coverage",
    "build_optimizer",
    "evaluate",
    "group_scores",
    "poly_lr",
    "train",
]


@dataclass
class TrainConfig:
    """Optimisation settings. Defaults: the spec's CPU protocol (the official SegNeXt-L recipe
    is lr 6e-5, head lr ×10, warmup 1500 iters, 160k iters; ``aucseg train`` uses that)."""

    iters: int = 3000
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.01
    head_lr_mult: float = 1.0  # the decoder's learning-rate multiplier (official: 10)
    power: float = 1.0  # poly decay exponent
    warmup_iters: int = 0
    warmup_ratio: float = 1e-6
    w_auc: float = 1.0  # 0: cross-entropy only
    auc: dict = field(default_factory=dict)  # AUCLoss options: surrogate, transform, scale, ...
    num_workers: int = 0
    precision: str = "fp32"  # fp32 | bf16 | fp16 (CUDA only): autocast of the forward
    sync_auc: bool = False  # under torchrun: the AUC loss over all processes' pixels

    def __post_init__(self):
        def check(name: str, ok: bool, want: str) -> None:
            if not ok:
                raise UserError(f"TrainConfig.{name} must be {want}, got {getattr(self, name)!r}")

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        check("iters", is_int(self.iters) and self.iters >= 1, "an integer >= 1")
        check("batch_size", is_int(self.batch_size) and self.batch_size >= 1, "an integer >= 1")
        check("lr", is_num(self.lr) and self.lr > 0, "a finite number > 0")
        check("weight_decay", is_num(self.weight_decay) and self.weight_decay >= 0, "≥ 0")
        check("head_lr_mult", is_num(self.head_lr_mult) and self.head_lr_mult > 0, "> 0")
        check("power", is_num(self.power) and self.power >= 0, "a finite number >= 0")
        check("warmup_iters", is_int(self.warmup_iters) and self.warmup_iters >= 0, "≥ 0")
        check("warmup_ratio", is_num(self.warmup_ratio) and 0 < self.warmup_ratio <= 1, "in (0, 1]")
        check("w_auc", is_num(self.w_auc) and self.w_auc >= 0, "a finite number >= 0")
        check("num_workers", is_int(self.num_workers) and self.num_workers >= 0, "≥ 0")
        check("precision", self.precision in ("fp32", "bf16", "fp16"), "fp32, bf16 or fp16")
        check("sync_auc", isinstance(self.sync_auc, bool), "True or False")
        try:
            AUCLoss(**self.auc)
        except (TypeError, ValueError) as err:
            raise UserError(f"TrainConfig.auc: {err}") from None


def poly_lr(it: int, cfg: TrainConfig) -> float:
    """lr at iteration ``it``: linear warmup from ``warmup_ratio·lr``, then
    ``lr · (1 - it / iters) ** power`` (mmcv's poly schedule with min_lr 0)."""
    lr = cfg.lr * (1 - it / cfg.iters) ** cfg.power
    if it < cfg.warmup_iters:
        k = (1 - it / cfg.warmup_iters) * (1 - cfg.warmup_ratio)
        lr *= 1 - k
    return lr


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, no weight decay on normalisation layers, ``head_lr_mult`` on non-backbone params."""
    groups: dict[tuple[bool, bool], list[Tensor]] = {}
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    for mod_name, mod in model.named_modules():
        for p in mod.parameters(recurse=False):
            if p.requires_grad:
                key = (isinstance(mod, norm_types), not mod_name.startswith("backbone"))
                groups.setdefault(key, []).append(p)
    param_groups = [
        {
            "params": ps,
            "weight_decay": 0.0 if is_norm else cfg.weight_decay,
            "lr_mult": cfg.head_lr_mult if is_head else 1.0,
        }
        for (is_norm, is_head), ps in groups.items()
    ]
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=(0.9, 0.999))


def batch_coverage(labels: Tensor, classes: Sequence[int]) -> bool:
    """Whether every class in ``classes`` has at least one pixel in the batch ``labels``."""
    present = torch.zeros(256, dtype=torch.bool)
    present[torch.unique(labels).clamp(0, 255).long()] = True
    return bool(present[list(classes)].all())


def _batches(dataset: Dataset, cfg: TrainConfig, seed: int):
    """Endless per-rank batches of ``global batch / world`` samples.

    A ``DistributedSampler`` is used in every case (``num_replicas=1`` in one process), so the
    epoch permutation depends only on (seed, epoch): the ranks' batches of one step together
    hold exactly the samples of the single-process global batch."""
    world, rank = dist.world_size(), dist.rank()
    sampler = DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    # a dataset with set_epoch (augmentations keyed by epoch and item) gets fresh workers each
    # epoch, so the workers' copies see the new epoch
    keyed = hasattr(dataset, "set_epoch")
    loader = DataLoader(
        dataset,
        dist.per_rank_batch(cfg.batch_size),
        sampler=sampler,
        drop_last=True,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0 and not keyed,
    )
    if len(loader) == 0:
        raise UserError(
            f"the training set has {len(dataset)} samples, fewer than one batch of {cfg.batch_size}"
        )
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        if keyed:
            dataset.set_epoch(epoch)
        yield from worker_errors(loader)
        epoch += 1


def worker_errors(batches: Iterable) -> Iterator:
    """Iterate ``batches``; a :class:`UserError` raised in a ``DataLoader`` worker (which torch
    re-raises with the worker's whole traceback as its message) comes back as its one line."""
    try:
        yield from batches
    except UserError as err:
        lines = str(err).strip().splitlines()
        if len(lines) > 1 and lines[0].startswith("Caught UserError"):
            raise UserError(lines[-1].split("UserError: ", 1)[-1]) from None
        raise


def train(
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    coverage_classes: Sequence[int] = (),
    desc: str = "train",
) -> dict:
    """Train ``model`` for ``cfg.iters`` iterations on ``dataset`` items (image, label).

    Loss: :class:`aucseg.SegmentationLoss` with ``cfg.w_auc``. Returns a history with the mean
    loss terms of the last 10% of iterations and, if ``coverage_classes`` is given, the fraction
    of training batches that contained every one of them (both averaged over all processes).

    Under ``torchrun`` (see :mod:`labcore.dist`) the model is wrapped in DDP, every process
    takes ``cfg.batch_size / world`` samples per step (an error if it does not divide), the
    AUC loss pools each process's own pixels (``cfg.sync_auc=True``: the global batch's), and a
    bank inside ``dataset`` is one per process. ``cfg.precision`` runs the forward under
    ``torch.autocast``; the loss (upsampling, CE, sigmoid, the AUC sums) is computed in fp32.
    """
    device = torch.device(device)
    model.to(device).train()
    net = dist.wrap_model(model)
    criterion = SegmentationLoss(w_auc=cfg.w_auc, sync=cfg.sync_auc, **cfg.auc)
    opt = build_optimizer(model, cfg)
    scaler = dist.grad_scaler(cfg.precision, device)
    losses, covered = [], []
    batches = _batches(dataset, cfg, seed)
    for it in progress(range(cfg.iters), desc=desc, leave=False):
        img, lab = next(batches)
        if coverage_classes:
            covered.append(batch_coverage(lab, coverage_classes))
        lr = poly_lr(it, cfg)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_mult"]
        with dist.autocast(cfg.precision, device):
            logits = net(img.to(device))
        out = criterion(logits.float(), lab.to(device))  # the loss head in fp32 (mmseg: force_fp32)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(out["loss"]).backward()
            scaler.step(opt)
            scaler.update()
        else:
            out["loss"].backward()
            opt.step()
        losses.append([float(out[k].detach()) for k in ("loss", "ce", "auc")])
    tail = np.asarray(losses[-max(1, len(losses) // 10) :])
    local = {
        "final_loss": float(tail[:, 0].mean()),
        "final_ce": float(tail[:, 1].mean()),
        "final_auc": float(tail[:, 2].mean()),
    }
    if coverage_classes:
        local["tail_coverage"] = float(np.mean(covered))
    world = dist.world_size()
    return {k: v / world for k, v in dist.all_reduce_dict(local).items()}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    ignore_index: int = 255,
) -> ConfusionMatrix:
    """Dataset-level confusion matrix (mmseg mIoU): logits upsampled to each label's size.

    Under ``torchrun`` every process evaluates its strided shard of the dataset (no padding, no
    duplicates) and the confusion matrices are summed over processes, so every process returns
    the single-process matrix exactly. ``batch_size`` is per process."""
    device = torch.device(device)
    model = dist.unwrap(model)
    model.to(device).eval()
    cm = ConfusionMatrix(num_classes, ignore_index)
    if dist.world_size() > 1:
        dataset = Subset(dataset, list(dist.shard(len(dataset))))
    loader = DataLoader(dataset, batch_size, shuffle=False)
    for img, lab in progress(worker_errors(loader), desc="evaluate", leave=False):
        logits = model(img.to(device))
        logits = F.interpolate(logits, lab.shape[-2:], mode="bilinear", align_corners=False)
        cm.update(logits.argmax(1).cpu(), lab)
    if dist.world_size() > 1:
        cm.all_reduce()
    return cm


def group_scores(cm: ConfusionMatrix, groups: dict[str, Sequence[int]]) -> dict[str, float]:
    """mIoU, pixel accuracy and the nan-mean IoU of each class group (e.g. head/middle/tail)."""
    iou = cm.iou()
    out = {"mIoU": cm.miou(), "aAcc": cm.pixel_accuracy()}
    for name, ids in groups.items():
        vals = iou[list(ids)]
        out[f"{name}_mIoU"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return out
