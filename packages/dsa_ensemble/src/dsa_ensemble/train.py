"""Training loops: supervised (rotating blank head) and FreeMatch semi-supervised (DSA-FreeMatch).

Both follow the official recipe: SGD (momentum 0.9, Nesterov, weight decay 5e-4, none on biases and
BN), cosine schedule with 7/16 cycle and no warm-up, an EMA model (0.999) for evaluation, model
selection on a *validation* split (never on test).

Distributed (``labcore.dist``, under torchrun): every rank draws the same global batch from one
seeded permutation and the same augmentation draws, then keeps its strided shard
(``batch[rank::world]``), so the global batch is the one a single process would see. DDP averages
the gradients of per-rank means, which equals the global-batch gradient for the cross-entropy terms.
FreeMatch's SAT state is updated from the weak-view probabilities all-gathered over ranks (as USB
does), so it is identical on every rank and equal to a single process's; SAF, L_mc and the BN
statistics are computed per rank (CPU has no SyncBatchNorm; on CUDA, BN is converted to
``SyncBatchNorm`` when world size > 1).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dsa_ensemble import losses as L
from dsa_ensemble.augment import strong_view, weak_view
from dsa_ensemble.config import DSAConfig
from dsa_ensemble.data import ImageSet, to_float
from dsa_ensemble.metrics import ensemble_metrics
from dsa_ensemble.model import DSAModel, build_backbone
from labcore import dist

__all__ = ["FitResult", "ModelEMA", "build_model", "fit", "predict"]


def build_model(cfg: DSAConfig, num_classes: int, in_chans: int = 3, input_size: int = 32,
                weights: str | None = None) -> DSAModel:  # fmt: skip
    """The backbone named by ``cfg.backbone`` (timm names with ``pretrained=False``) + heads."""
    backbone = build_backbone(cfg.backbone, in_chans, weights, cfg.bn_momentum)
    return DSAModel(backbone, num_classes, heads=cfg.heads, head_type=cfg.head_type,
                    in_chans=in_chans, input_size=input_size, bn_momentum=cfg.bn_momentum,
                    **cfg.head_kwargs())  # fmt: skip


class ModelEMA:
    """EMA of the parameters (decay ``d``); buffers (BN statistics) are copied, as in FixMatch."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, p in zip(self.ema.parameters(), model.parameters(), strict=True):
            e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)
        for e, b in zip(self.ema.buffers(), model.buffers(), strict=True):
            e.copy_(b)


def _optimizer(model: nn.Module, cfg: DSAConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # biases, BN/PReLU weights
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]  # fmt: skip
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def _cosine(total: int, cycles: float):
    return lambda step: max(0.0, math.cos(math.pi * cycles * step / max(1, total)))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu",
            batch_size: int = 256, precision: str = "fp32") -> torch.Tensor:  # fmt: skip
    """Stacked logits (S, N, K) in eval mode (float32)."""
    was = model.training
    model.eval()
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = to_float(x[i : i + batch_size]).to(device)
        with dist.autocast(precision, device):
            out.append(torch.stack([z.float() for z in model(xb)]).cpu())
    model.train(was)
    return torch.cat(out, dim=1)


class _Stream:
    """Endless global batches of indices from seeded permutations (identical on every rank)."""

    def __init__(self, n: int, batch: int, seed: int):
        self.n, self.batch = n, batch
        self.rng = np.random.default_rng(seed)
        self.buf = np.empty(0, dtype=np.int64)

    def next(self) -> np.ndarray:
        while self.buf.size < self.batch:
            self.buf = np.concatenate([self.buf, self.rng.permutation(self.n)])
        out, self.buf = self.buf[: self.batch], self.buf[self.batch :]
        return out


@dataclass
class FitResult:
    model: nn.Module  # the trained model (unwrapped)
    eval_model: nn.Module  # what is evaluated: the EMA model (or the model), best on validation
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_accuracy: float | None = None
    seconds: float = 0.0
    steps: int = 0
    pseudo_labels: dict = field(default_factory=dict)


def _shard(t: torch.Tensor) -> torch.Tensor:
    w = dist.world_size()
    return t if w == 1 else t[dist.rank() :: w]


def fit(cfg: DSAConfig, labeled: ImageSet, val: ImageSet | None = None, *,
        unlabeled: ImageSet | None = None, unlabeled_targets: torch.Tensor | None = None,
        model: DSAModel | None = None, device: torch.device | str = "cpu",
        precision: str = "fp32", seed: int = 0, progress=None) -> FitResult:  # fmt: skip
    """Train ``model`` (built from ``cfg`` when None) on ``labeled`` (+ ``unlabeled`` for SSL).

    ``unlabeled_targets`` (optional) are used only to report pseudo-label accuracy.
    Returns a :class:`FitResult`; ``eval_model`` is the EMA (or plain) model of the best validation
    epoch (the last epoch without ``val``).
    """
    device = torch.device(device)
    dist.check_precision(precision, device)
    world = dist.world_size()
    local_b = dist.per_rank_batch(cfg.batch_size)
    del local_b  # validated; the shard is taken from the global batch below
    ssl = unlabeled is not None
    if ssl and world > 1 and (cfg.mu * cfg.batch_size) % world:
        dist.per_rank_batch(cfg.mu * cfg.batch_size)
    torch.manual_seed(seed)
    if model is None:
        model = build_model(cfg, labeled.num_classes, labeled.x.shape[1], labeled.x.shape[-1])
    model = model.to(device)
    if world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    net = dist.wrap_model(model, find_unused_parameters=True) if world > 1 else model
    opt = _optimizer(model, cfg)
    steps_per_epoch = cfg.steps_per_epoch or max(1, len(labeled) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(total, cfg.cosine_cycles))
    scaler = dist.grad_scaler(precision, device)
    gen = torch.Generator().manual_seed(seed + 1)
    lab_stream = _Stream(len(labeled), cfg.batch_size, seed + 2)
    unl_stream = _Stream(len(unlabeled), cfg.mu * cfg.batch_size, seed + 3) if ssl else None
    sats = [L.SATState.create(labeled.num_classes, cfg.sat_ema, device)
            for _ in range(model.num_heads)] if ssl else []  # fmt: skip
    res = FitResult(model, model)
    best_state, best_acc = None, -1.0
    pl_correct = pl_kept = pl_total = 0.0
    t0 = time.perf_counter()
    step = 0
    epochs = range(cfg.epochs)
    if progress is not None:
        epochs = progress(epochs, desc=f"{cfg.head_type}{' ssl' if ssl else ''}", leave=False)
    for epoch in epochs:
        count_thr = L.count_threshold(epoch, cfg.count_thr_min, cfg.count_thr_max,
                                      cfg.count_thr_rampup)  # fmt: skip
        sums = {"loss": 0.0, "n": 0}
        net.train()
        for _ in range(steps_per_epoch):
            idx = lab_stream.next()
            xb = weak_view(labeled.x[idx], gen, cfg.shift, cfg.flip)
            yb = labeled.y[idx]
            if ssl:
                uidx = unl_stream.next()
                uw = weak_view(unlabeled.x[uidx], gen, cfg.shift, cfg.flip)
                us = strong_view(unlabeled.x[uidx], gen, cfg.shift, cfg.flip, cfg.strong_aug)
                xb_l, yb_l, uw_l, us_l = (_shard(t) for t in (xb, yb, uw, us))
                inputs = torch.cat([xb_l, uw_l, us_l]).to(device)
            else:
                xb_l, yb_l = _shard(xb), _shard(yb)
                inputs = xb_l.to(device)
            yb_l = yb_l.to(device)
            with dist.autocast(precision, device):
                out = net(inputs, return_private=True)
            logits = [z.float() for z in out.logits]
            nb = xb_l.shape[0]
            lx = [z[:nb] for z in logits]
            loss = L.supervised_loss(lx, yb_l, step, cfg.blank_num if model.num_heads > 1 else 0)
            if cfg.fd_weight > 0 and out.private is not None:
                priv = out.private if not ssl else [p[nb + uw_l.shape[0] :] for p in out.private]
                loss = loss + cfg.fd_weight * L.feature_decorrelation_loss(priv)
            if ssl:
                nu = uw_l.shape[0]
                lw = [z[nb : nb + nu] for z in logits]
                ls = [z[nb + nu :] for z in logits]
                masks, saf = [], []
                for s, sat in enumerate(sats):
                    probs_w = lw[s].detach().softmax(dim=-1)
                    sat.update(dist.all_gather_cat(probs_w))
                    m = sat.mask(probs_w, cfg.taut_alpha)
                    masks.append(m)
                    saf.append(L.saf_loss(m, ls[s], sat.p_model, sat.label_hist, cfg.saf_sign))
                masks_t = torch.stack(masks)
                extra = cfg.lambda_saf * torch.stack(saf).mean()
                if cfg.lambda_ens > 0 and model.num_heads > 1:
                    labels, keep = L.ensemble_pseudo_label(lw, masks_t, count_thr, cfg.pseudo_label)
                    extra = extra + cfg.lambda_ens * L.ensemble_loss(ls, labels, keep, step,
                                                                     cfg.blank_num)  # fmt: skip
                else:
                    labels, keep = lw[0].detach().argmax(dim=-1), masks_t[0]
                if cfg.lambda_fm > 0:
                    fm = [L.freematch_unlabeled_loss(ls[s], lw[s], masks_t[s])
                          for s in range(len(ls))]  # fmt: skip
                    extra = extra + cfg.lambda_fm * torch.stack(fm).mean()
                if cfg.lambda_mc > 0:
                    extra = extra + cfg.lambda_mc * L.max_correlation_loss(lx, yb_l)
                if step >= cfg.ensemble_warmup:
                    loss = loss + extra
                pl_kept += float(keep.sum())
                pl_total += float(keep.numel())
                if unlabeled_targets is not None:
                    true = _shard(unlabeled_targets[uidx]).to(device)
                    pl_correct += float(((labels == true).float() * keep).sum())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if ema is not None:
                ema.update(model)
            sums["loss"] += float(loss.detach()) * nb
            sums["n"] += nb
            step += 1
        tot = dist.all_reduce_dict(sums)
        row = {"epoch": epoch, "train_loss": tot["loss"] / max(1.0, tot["n"]),
               "lr": sched.get_last_lr()[0]}  # fmt: skip
        eval_model = ema.ema if ema is not None else model
        if val is not None:
            m = ensemble_metrics(predict(eval_model, val.x, device, precision=precision), val.y)
            row["val_accuracy"] = m["accuracy"]
            if m["accuracy"] > best_acc:
                best_acc, res.best_epoch = m["accuracy"], epoch
                best_state = copy.deepcopy(eval_model.state_dict())
        res.history.append(row)
    res.seconds = time.perf_counter() - t0
    res.steps = step
    eval_model = ema.ema if ema is not None else model
    if best_state is not None:
        eval_model.load_state_dict(best_state)
        res.best_val_accuracy = best_acc
    else:
        res.best_epoch = cfg.epochs - 1
    res.eval_model = eval_model
    if ssl:
        tot = dist.all_reduce_dict({"kept": pl_kept, "total": pl_total, "correct": pl_correct})
        res.pseudo_labels = {"mask_rate": tot["kept"] / max(1.0, tot["total"])}
        if unlabeled_targets is not None:
            res.pseudo_labels["accuracy"] = tot["correct"] / max(1.0, tot["kept"])
        res.pseudo_labels["sat_tau"] = [float(s.tau) for s in sats]
    return res
