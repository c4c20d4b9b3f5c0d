"""The official training loop: resample negatives each epoch, Adam, project users every step,
select the epoch with the best validation P@3 (official convention)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import scipy.sparse as sp
import torch

from dpcml.model import DPCML
from dpcml.ranking import evaluate_ranking
from dpcml.sampler import TripletSampler
from labcore import dist
from labcore.cli import UserError

__all__ = ["FitResult", "fit"]


@dataclass
class FitResult:
    """Per-epoch history and the selected epoch (the model holds that epoch's weights)."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val: float = float("nan")
    train_seconds: float = 0.0
    tuples_seen: int = 0


def fit(
    model: DPCML,
    train: sp.csr_matrix,
    val: sp.csr_matrix | None = None,
    *,
    epochs: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    select_metric: str = "P@3",
    progress=None,
    precision: str = "fp32",
) -> FitResult:
    """Train ``model`` in place with its config (sampling, S, lr, batch size, epochs).

    With ``val``, evaluates after every epoch (official convention) and restores the weights of
    the best epoch by ``select_metric`` (P@3, as the official ``k=[5,3]`` selects). ``progress``
    wraps the epoch iterator (e.g. ``labcore.cli.progress``). ``precision`` is applied with
    ``labcore.dist.autocast`` (see the README: no op of the DPCML step is on autocast's
    lower-precision list, so bf16 leaves it in fp32).

    Under ``torchrun`` (``labcore.dist.init`` called first) every rank draws the same epoch of
    tuples from ``seed`` and trains on tuples ``rank, rank + W, …`` of each global batch of
    ``config.batch_size`` (per-rank batch = global / W) in a DDP wrapper; the loss weights make
    every step the single-process step. Validation shards the users and merges exactly.
    """
    cfg = model.config
    epochs = cfg.epochs if epochs is None else epochs
    if not isinstance(epochs, int) or epochs < 1:
        raise UserError(f"epochs must be an integer >= 1, got {epochs!r}")
    dist.check_precision(precision, device)
    world, rank = dist.world_size(), dist.rank()
    dist.per_rank_batch(cfg.batch_size)  # the global batch must divide over the ranks
    model.to(device)
    net = dist.wrap_model(model, broadcast_buffers=False) if world > 1 else model
    sampler = TripletSampler(train, cfg.num_negatives, cfg.sampling, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scaler = dist.grad_scaler(precision, device)
    result, best_state = FitResult(), None
    k = int(select_metric.split("@")[1]) if "@" in select_metric else 3
    epoch_iter = range(epochs) if progress is None else progress(range(epochs), desc="epochs")
    for epoch in epoch_iter:
        model.train()
        start, total, n = time.perf_counter(), 0.0, 0
        for users, pos, neg in sampler.batches(cfg.batch_size, device):
            n += len(users)
            if world > 1:
                model.renormalize_items_(torch.cat([pos, neg.reshape(-1)]))
                users, pos, neg = users[rank::world], pos[rank::world], neg[rank::world]
            with dist.autocast(precision, device):
                loss = net(users, pos, neg, pair_weight=float(world))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # the scaler passes through unless fp16 on CUDA
            scaler.step(opt)
            scaler.update()
            model.project_users_()
            total += loss.item()
        if world > 1:  # the mean over ranks of W·hinge_r + η·DCRS is the single-process loss
            total = dist.all_reduce_dict({"loss": total})["loss"] / world
        result.train_seconds += time.perf_counter() - start
        result.tuples_seen += n
        record = {"epoch": epoch, "loss": total / max(n, 1)}
        if val is not None:
            model.eval()
            metrics = evaluate_ranking(model, train, val, ks=(k,), device=device)
            record[f"val_{select_metric}"] = metrics[select_metric]
            if not metrics[select_metric] <= result.best_val:  # also true for the first (NaN)
                result.best_epoch, result.best_val = epoch, metrics[select_metric]
                best_state = copy.deepcopy(model.state_dict())
        result.history.append(record)
    if best_state is not None:
        model.load_state_dict(best_state)
    elif epochs:
        result.best_epoch = epochs - 1
    model.eval()
    return result
