"""Training recipe of the official scripts: AdamW, weight-decay rule, timm cosine schedule.

* AdamW(betas=(0.9, 0.999), eps=1e-8); weight decay on tensors with ≥ 2 dims (the 3-D/4-D
  factors A and B, the head weight) but not on 1-D tensors, ``cls_token``, ``pos_embed`` or α.
* timm ``CosineLRScheduler`` stepped per epoch: warmup from 1e-6, then cosine to ``min_lr``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

from labcore.cli import progress

__all__ = [
    "cosine_schedule",
    "evaluate_top1",
    "make_optimizer",
    "param_groups",
    "tensor_batches",
    "train_epoch",
]

NO_DECAY_NAMES = ("cls_token", "pos_embed", "dist_token", "snell_alpha")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into decayed (ndim ≥ 2) and non-decayed groups."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or any(k in name for k in NO_DECAY_NAMES)
        (no_decay if skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, groups: list[dict] | None = None
) -> torch.optim.AdamW:
    groups = groups if groups is not None else param_groups(model, weight_decay)
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def cosine_schedule(
    optimizer, epochs: int, warmup_epochs: int = 10, min_lr: float = 1e-5, warmup_lr: float = 1e-6
):
    """timm's per-epoch cosine schedule (call ``.step(epoch)`` at each epoch start)."""
    from timm.scheduler import CosineLRScheduler

    return CosineLRScheduler(
        optimizer,
        t_initial=epochs,
        lr_min=min_lr,
        warmup_t=min(warmup_epochs, epochs - 1),
        warmup_lr_init=warmup_lr,
        warmup_prefix=False,
    )


def tensor_batches(
    X: Tensor, y: Tensor, batch_size: int, shuffle: bool = False, generator=None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Mini-batches of in-memory tensors (index slicing, no per-sample Python work)."""
    order = torch.randperm(len(y), generator=generator) if shuffle else torch.arange(len(y))
    for start in range(0, len(y), batch_size):
        idx = order[start : start + batch_size]
        yield X[idx], y[idx]


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> float:
    """One pass of cross-entropy training; returns the mean loss."""
    model.train()
    total, count = 0.0, 0
    for x, y in progress(batches, disable=not show_progress or None, leave=False):
        x, y = x.to(device), y.to(device)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        count += len(y)
    return total / max(count, 1)


@torch.no_grad()
def evaluate_top1(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device | str = "cpu"
) -> float:
    """Top-1 accuracy (fraction) over all batches."""
    from labcore.metrics import topk_accuracy

    model.eval()
    logits, targets = [], []
    for x, y in batches:
        logits.append(model(x.to(device)).float().cpu())
        targets.append(torch.as_tensor(y))
    return topk_accuracy(torch.cat(logits), torch.cat(targets), topk=(1,))[0]
