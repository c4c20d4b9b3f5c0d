"""Training as the paper runs it: Adam, early stopping on validation loss, best-val checkpoint."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.utils import subgraph

from labcore import dist
from labcore.cli import UserError, progress
from n2gnn import _validate as check

Task = Literal["multiclass", "binary", "multilabel"]
Metric = Literal["accuracy", "rocauc", "ap"]


def task_loss(logits: Tensor, y: Tensor, task: Task) -> Tensor:
    """log-softmax + NLL for class labels; BCE-with-logits on the labelled (non-NaN) entries."""
    if task == "multilabel":
        y = y.float()
        known = ~torch.isnan(y)
        return F.binary_cross_entropy_with_logits(logits[known], y[known])
    return F.cross_entropy(logits, y.view(-1).long())


def task_metric(logits: Tensor, y: Tensor, metric: Metric) -> float:
    """Accuracy; ROC-AUC (binary: softmax column 1; multilabel: mean over tasks); mean AP."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    logits, y = logits.detach().cpu(), y.detach().cpu()
    if metric == "accuracy":
        return float((logits.argmax(-1) == y.view(-1)).float().mean())
    if logits.dim() == 2 and y.dim() == 1:  # two-class softmax scored on column 1
        return float(roc_auc_score(y.numpy(), logits.softmax(-1)[:, 1].numpy()))
    score = roc_auc_score if metric == "rocauc" else average_precision_score
    y = y.float().numpy()
    p = logits.numpy()
    vals = []
    for t in range(y.shape[1]):  # per task: OGB's evaluator skips tasks without both labels
        known = ~np.isnan(y[:, t])
        if known.any() and 0 < y[known, t].sum() < known.sum():
            vals.append(score(y[known, t], p[known, t]))
    return float(np.mean(vals)) if vals else float("nan")


@dataclass
class FitResult:
    """Outcome of a run: the best-validation-loss epoch and its metrics."""

    best_epoch: int = -1
    val_loss: float = float("inf")
    val_metric: float = float("nan")
    test_metric: float = float("nan")
    train_metric: float = float("nan")
    epochs_run: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "history"}


@dataclass
class FitConfig:
    """Training settings (defaults: paper App. C); validated on construction."""

    epochs: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1e-6
    patience: int = 300
    num_parts: int = 1  # random node partitions per epoch (node tasks)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 needs CUDA)

    def __post_init__(self) -> None:
        if self.precision not in dist.PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(dist.PRECISIONS)}")
        check.integer("epochs", self.epochs)
        check.integer("patience", self.patience)
        check.integer("num_parts", self.num_parts)
        check.real("lr", self.lr, low=0.0, low_open=True)
        check.real("weight_decay", self.weight_decay, low=0.0)


def _adam(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


def _random_parts(num_nodes: int, num_parts: int, gen: torch.Generator) -> Iterable[Tensor]:
    """Random node partitions (the official code's ``RandomNodeSampler``)."""
    return torch.randperm(num_nodes, generator=gen).chunk(num_parts)


def _node_forward(model, data: Data, nodes: Tensor | None):
    """Logits for ``nodes`` (all when None) on their induced subgraph."""
    if nodes is None:
        return model(data.x, data.edge_index, getattr(data, "edge_attr", None)), None
    ei, ea = subgraph(
        nodes,
        data.edge_index,
        getattr(data, "edge_attr", None),
        relabel_nodes=True,
        num_nodes=data.num_nodes,
    )
    return model(data.x[nodes], ei, ea), nodes


def fit_node(
    model: nn.Module,
    data: Data,
    *,
    task: Task = "multiclass",
    metric: Metric = "accuracy",
    epochs: int = 1000,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    patience: int = 300,
    num_parts: int = 1,
    seed: int = 0,
    show_progress: bool = True,
    precision: str = "fp32",
) -> FitResult:
    """Train on ``data.train_mask``; select the epoch with the lowest loss on ``data.val_mask``.

    ``num_parts > 1`` trains and evaluates on random node partitions (induced subgraphs), as the
    official code does for large graphs. The model is left holding the best-val weights.

    Full-graph training is single-process by nature (one graph, one model step per epoch); under
    ``torchrun`` with more than one process this raises a ``UserError`` instead of training the
    same graph on every rank. ``precision`` runs forward passes under ``labcore.dist.autocast``;
    losses and metrics are computed in fp32.
    """
    FitConfig(epochs, lr, weight_decay, patience, num_parts, precision)
    require_single_process("full-graph node classification")
    device = next(model.parameters()).device
    scaler = dist.grad_scaler(precision, device)
    data = data.to(device)
    opt = _adam(model, lr, weight_decay)
    gen = torch.Generator().manual_seed(seed)
    res, best_state, start = FitResult(), None, time.perf_counter()
    masks = {s: getattr(data, f"{s}_mask") for s in ("train", "val", "test")}

    def parts():
        if num_parts <= 1:
            return [None]
        return [p.to(device) for p in _random_parts(data.num_nodes, num_parts, gen)]

    def collect(logits_parts):
        logits = torch.empty(data.num_nodes, *logits_parts[0][0].shape[1:], device=device)
        # fp32 buffer: autocast logits are cast on assignment
        for lg, nodes in logits_parts:
            logits[nodes if nodes is not None else slice(None)] = lg
        return logits

    bar = progress(range(epochs), desc="train", leave=False, disable=not show_progress or None)
    for epoch in bar:
        model.train()
        for nodes in parts():
            opt.zero_grad()
            with dist.autocast(precision, device):
                logits, _ = _node_forward(model, data, nodes)
            tm = masks["train"] if nodes is None else masks["train"][nodes]
            if tm.any():
                y = data.y[nodes if nodes is not None else slice(None)][tm]
                scaler.scale(task_loss(logits[tm].float(), y, task)).backward()
                scaler.step(opt)
                scaler.update()
        model.eval()
        with torch.no_grad(), dist.autocast(precision, device):
            logits = collect([_node_forward(model, data, nodes) for nodes in parts()])
        val_loss = float(task_loss(logits[masks["val"]], data.y[masks["val"]], task))
        res.epochs_run = epoch + 1
        res.history.append({"epoch": epoch, "val_loss": val_loss})
        if val_loss < res.val_loss:
            res.val_loss, res.best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
            for s in ("train", "val", "test"):
                setattr(res, f"{s}_metric", task_metric(logits[masks[s]], data.y[masks[s]], metric))
        bar.set_postfix(val_loss=f"{val_loss:.3f}", best=f"{res.val_metric:.3f}")
        if epoch - res.best_epoch >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    res.seconds = time.perf_counter() - start
    return res


def require_single_process(what: str) -> None:
    """``UserError`` when running under torchrun with more than one process."""
    if dist.world_size() > 1:
        raise UserError(
            f"{what} is single-process (one full graph per step); run it without torchrun "
            f"(world size here: {dist.world_size()})"
        )


def graph_loaders(
    train,
    val,
    test=None,
    *,
    batch_size: int,
    seed: int = 0,
    eval_batch_size: int | None = None,
):
    """PyG ``DataLoader``s for :func:`fit_graph`, the same in one process and under torchrun.

    ``batch_size`` is the global batch: each of the ``world`` processes takes
    ``batch_size / world`` graphs per step (a ``UserError`` when it does not divide). The training
    order is a ``DistributedSampler`` permutation seeded by ``seed`` and the epoch — also with one
    process — so the graphs of global batch ``j`` are the same whatever the number of processes
    (DDP then averages the per-rank gradients into the global batch's). Validation and test sets
    are strided shards per rank; :func:`fit_graph` gathers their outputs before scoring.
    """
    from torch.utils.data import DistributedSampler, Subset
    from torch_geometric.loader import DataLoader

    per_rank = dist.per_rank_batch(batch_size)
    world, rank = dist.world_size(), dist.rank()
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loaders = [DataLoader(train, per_rank, sampler=sampler)]
    eval_bs = eval_batch_size or batch_size
    for ds in (val, test):
        if ds is None:
            loaders.append(None)
            continue
        part = ds if world == 1 else Subset(ds, dist.shard(len(ds)).tolist())
        loaders.append(DataLoader(part, eval_bs))
    return tuple(loaders)


def _graph_pass(
    model, loader, task: Task, opt=None, precision: str = "fp32", scaler=None
) -> tuple[float, Tensor, Tensor]:
    """One pass over ``loader``. Training: local mean loss. Evaluation: outputs gathered over
    ranks, loss and outputs of the whole set (identical on every rank)."""
    device = next(model.parameters()).device
    total, count, outs, ys = 0.0, 0, [], []
    for batch in loader:
        batch = batch.to(device)
        with torch.set_grad_enabled(opt is not None), dist.autocast(precision, device):
            logits = model(
                batch.x, batch.edge_index, getattr(batch, "edge_attr", None), batch.batch
            )
        logits = logits.float()
        if opt is not None:
            loss = task_loss(logits, batch.y, task)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total += float(loss.detach()) * batch.num_graphs
            count += batch.num_graphs
        else:
            outs.append(logits.detach())
            ys.append(batch.y)
    if opt is not None:
        return total / max(count, 1), torch.empty(0), torch.empty(0)
    logits = dist.all_gather_cat(torch.cat(outs)) if outs else torch.empty(0, device=device)
    y = dist.all_gather_cat(torch.cat(ys)) if ys else torch.empty(0, device=device)
    return float(task_loss(logits, y, task)), logits, y


def fit_graph(
    model: nn.Module,
    train_loader,
    val_loader,
    test_loader=None,
    *,
    task: Task = "multiclass",
    metric: Metric = "accuracy",
    epochs: int = 1000,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    patience: int = 300,
    show_progress: bool = True,
    precision: str = "fp32",
) -> FitResult:
    """Mini-batch training over graph loaders; best epoch by validation loss.

    Under torchrun the model is wrapped in DistributedDataParallel (loaders from
    :func:`graph_loaders`); validation outputs are gathered from every rank, so every rank takes
    the same early-stopping decision and the metrics are the single-process ones. ``precision``
    runs forward passes under ``labcore.dist.autocast``; losses and metrics are computed in fp32.
    """
    FitConfig(epochs, lr, weight_decay, patience, precision=precision)
    device = next(model.parameters()).device
    c = getattr(model, "config", None)
    # some parameters get no gradient: the last step's message update in N2Graph (L=1 reads out
    # pseudo nodes only) and the ablations' cut pathways
    unused = c is None or c.num_steps == 1 or not (c.global_mp and c.node_to_pseudo)
    net = dist.wrap_model(model, find_unused_parameters=unused)
    opt = _adam(model, lr, weight_decay)
    scaler = dist.grad_scaler(precision, device)
    res, best_state, start = FitResult(), None, time.perf_counter()
    bar = progress(range(epochs), desc="train", leave=False, disable=not show_progress or None)
    for epoch in bar:
        dist.set_epoch(train_loader, epoch)
        net.train()
        _graph_pass(net, train_loader, task, opt, precision, scaler)
        model.eval()
        val_loss, v_logits, v_y = _graph_pass(model, val_loader, task, precision=precision)
        res.epochs_run = epoch + 1
        res.history.append({"epoch": epoch, "val_loss": val_loss})
        if val_loss < res.val_loss:
            res.val_loss, res.best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
            res.val_metric = task_metric(v_logits, v_y, metric)
            if test_loader is not None:
                _, t_logits, t_y = _graph_pass(model, test_loader, task, precision=precision)
                res.test_metric = task_metric(t_logits, t_y, metric)
        bar.set_postfix(val_loss=f"{val_loss:.3f}", best=f"{res.val_metric:.3f}")
        if epoch - res.best_epoch >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    res.seconds = time.perf_counter() - start
    return res


def evaluate_graph(
    model,
    loader,
    *,
    task: Task = "multiclass",
    metric: Metric = "accuracy",
    precision: str = "fp32",
):
    """(loss, metric) of a graph model over a loader, in eval mode (outputs gathered over ranks
    when the loader is a per-rank shard)."""
    model.eval()
    loss, logits, y = _graph_pass(model, loader, task, precision=precision)
    return loss, task_metric(logits, y, metric)


def evaluate_node(
    model,
    data: Data,
    mask: Tensor,
    *,
    task: Task = "multiclass",
    metric: Metric = "accuracy",
    num_parts: int = 1,
    seed: int = 0,
    precision: str = "fp32",
):
    """(loss, metric) of a node model on the nodes in ``mask``, in eval mode (single process)."""
    require_single_process("full-graph node evaluation")
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    data = data.to(device)
    parts = [None] if num_parts <= 1 else _random_parts(data.num_nodes, num_parts, gen)
    with torch.no_grad(), dist.autocast(precision, device):
        logits = torch.empty(data.num_nodes, model.config.out_channels, device=device)
        for nodes in parts:
            lg, idx = _node_forward(model, data, nodes)
            logits[idx if idx is not None else slice(None)] = lg
    mask = mask.to(device)
    return float(task_loss(logits[mask], data.y[mask], task)), task_metric(
        logits[mask], data.y[mask], metric
    )
