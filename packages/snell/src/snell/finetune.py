"""Fine-tune a timm model with SNELL on an image dataset, and evaluate a saved adapter.

``train(data, settings, snell_config)`` is what ``snell train`` runs: it builds the timm model
(random init, a local checkpoint or an ``hf-hub:`` id), injects the adapters, trains with the
official recipe (AdamW, weight decay on ≥ 2-D tensors, timm's per-epoch cosine schedule) and
evaluates one split at the end. ``evaluate(data, adapter_dir, settings)`` is ``snell evaluate``.

Both run unchanged under ``torchrun`` through :mod:`labcore.dist`: DistributedDataParallel,
a ``DistributedSampler`` (in a single process the same sampler with one replica, so one process
and N processes see the same global batches), per-rank batch = global batch / world size, the
evaluation split sharded and its hit counts summed, only rank 0 saving and printing.
``settings.precision`` (``fp32`` / ``bf16`` / ``fp16``) runs the forward under
``labcore.dist.autocast``; SNELL's kernel, threshold and gate stay fp32 (see ``SnellLinear``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labcore import dist
from labcore.cli import UserError, progress
from snell.config import SnellConfig
from snell.data import load_split
from snell.model import SnellModel, from_pretrained, get_snell_model
from snell.training import cosine_schedule, make_optimizer

__all__ = [
    "TrainResult",
    "TrainSettings",
    "create_model",
    "evaluate",
    "load_backbone_weights",
    "train",
]


@dataclass
class TrainSettings:
    """Everything ``snell train`` / ``snell evaluate`` need besides the SNELL adapter itself.

    ``batch_size`` is the *global* batch: under torchrun each of N processes takes
    ``batch_size / N``. Defaults follow the official VTAB scripts (AdamW lr 1e-3, wd 1e-2,
    100 epochs, 10 warmup epochs, backbone stochastic depth 0.1, fp32, 224² direct resize).
    """

    model: str = "vit_base_patch16_224"
    weights: str | None = None  # local .npz/.pth/.safetensors, 'hf-hub:org/name', None = random
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    img_size: int = 224
    layout: str = "auto"  # auto | vtab | imagefolder
    batch_size: int = 16
    workers: int = 0
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_epochs: int = 10
    drop_path: float = 0.1
    eval_split: str | None = "test"  # None or "": no evaluation at the end
    precision: str = "fp32"
    skip_bad_images: bool = False

    def __post_init__(self) -> None:
        for name in ("img_size", "batch_size", "epochs"):
            _check(name, getattr(self, name), lambda v: isinstance(v, int) and v >= 1, ">= 1")
        for name in ("workers", "warmup_epochs"):
            _check(name, getattr(self, name), lambda v: isinstance(v, int) and v >= 0, ">= 0")
        _check("lr", self.lr, lambda v: _finite(v) and v > 0, "> 0")
        _check("weight_decay", self.weight_decay, lambda v: _finite(v) and v >= 0, ">= 0")
        _check("drop_path", self.drop_path, lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)")
        if self.layout not in ("auto", "vtab", "imagefolder"):
            raise UserError(f"layout must be auto, vtab or imagefolder, got {self.layout!r}")
        if not isinstance(self.model_kwargs, dict):
            raise UserError(f"model_kwargs must be a mapping, got {self.model_kwargs!r}")
        dist.check_precision(self.precision, "cuda")  # fp16-on-CPU is checked with the device


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check(name: str, value, ok, what: str) -> None:
    if isinstance(value, bool) or not ok(value):
        raise UserError(f"{name} must be {what}, got {value!r}")


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model (not DDP-wrapped) and its figures."""

    model: SnellModel
    metrics: dict[str, Any]
    timings: dict[str, float]
    adapter_dir: Path | None = None
    num_classes: int = 0


# ------------------------------------------------------------------------------ models
def create_model(
    name: str,
    weights: str | None,
    num_classes: int,
    img_size: int,
    drop_path: float = 0.0,
    extra: dict | None = None,
) -> nn.Module:
    """A timm model: random init, a local checkpoint (:func:`load_backbone_weights`) or a hub id."""
    import timm

    kwargs = dict(num_classes=num_classes, img_size=img_size, drop_path_rate=drop_path)
    kwargs.update(extra or {})
    if name not in timm.list_models() and not name.startswith("hf-hub:"):
        raise UserError(f"unknown timm model {name!r}")
    try:
        if weights is None:
            return timm.create_model(name, pretrained=False, **kwargs)
        if weights.startswith("hf-hub:"):
            return timm.create_model(weights, pretrained=True, **kwargs)
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
        model = timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, AssertionError) as e:  # bad --model-kwargs / size for this model
        raise UserError(f"cannot build {name} with {kwargs}: {e}") from None
    load_backbone_weights(model, path)
    return model


def load_backbone_weights(model: nn.Module, path: Path) -> None:
    """Load a local checkpoint (.npz of Google's ViTs, or .pth / .safetensors state dict) into
    ``model``; the classifier is skipped when its shape differs, anything else must match."""
    from timm.models import load_state_dict

    if path.suffix == ".npz":
        if not hasattr(model, "load_pretrained"):
            raise UserError(f"{path}: .npz weights need a timm VisionTransformer")
        try:
            model.load_pretrained(str(path))
        except Exception as e:  # a corrupt or foreign npz
            raise UserError(f"cannot read weights {path}: {' '.join(str(e).split())}") from None
        return
    try:
        state = load_state_dict(str(path), use_ema=False)
    except Exception as e:  # any unreadable file is a user error here
        raise UserError(f"cannot read weights {path}: {' '.join(str(e).split())}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} holds no state dict of tensors")
    own = model.state_dict()
    head = {
        k for k in state if k.startswith("head.") and k in own and own[k].shape != state[k].shape
    }
    state = {k: v for k, v in state.items() if k not in head}
    bad = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in state.items() if k not in bad}, strict=False
    )
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected or bad:
        raise UserError(
            f"{path} does not fit {type(model).__name__}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(bad)} mis-shaped tensors "
            f"(e.g. {(missing + unexpected + bad)[0]})"
        )


def _num_classes(dataset) -> int:
    return max(len(getattr(dataset, "classes", ())), int(max(dataset.targets)) + 1)


# ------------------------------------------------------------------------------ loops
def _quiet(show: bool) -> dict:
    return {} if show else {"disable": True}  # labcore's default: bars on rank 0 in a terminal


def _sampler(dataset, shuffle: bool, seed: int):
    """The distributed sampler, with one replica in a single process (the same permutation)."""
    from torch.utils.data import DistributedSampler

    s = dist.sampler(dataset, shuffle=shuffle, seed=seed)
    if s is None:
        s = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=shuffle, seed=seed)
    return s


def _batches(loader):
    """Iterate ``loader``; a worker's UserError (a bad image) comes back as its one line."""
    try:
        yield from loader
    except UserError as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        msg = lines[-1].split("UserError: ", 1)[-1] if len(lines) > 1 else str(e)
        raise UserError(msg) from None


def _train_epoch(model, loader, opt, scaler, precision: str, device, show: bool) -> float:
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64)
    count = 0
    for x, y in progress(_batches(loader), leave=False, **_quiet(show)):
        x, y = x.to(device), y.to(device)
        with dist.autocast(precision, device):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        loss_sum += loss.detach().double().cpu() * len(y)
        count += len(y)
    sums = dist.all_reduce_dict({"loss": loss_sum, "n": count})
    return sums["loss"] / max(sums["n"], 1)


@torch.no_grad()
def _top1(model, dataset, batch_size: int, workers: int, precision: str, device) -> float:
    """Top-1 over ``dataset``, each rank scoring its strided shard; hits and counts summed."""
    from torch.utils.data import DataLoader, Subset

    model.eval()
    shard = Subset(dataset, dist.shard(len(dataset)).tolist())
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers)
    hits, n = 0, 0
    for x, y in _batches(loader):
        with dist.autocast(precision, device):
            logits = model(x.to(device))
        hits += int((logits.float().argmax(-1).cpu() == y).sum())
        n += len(y)
    sums = dist.all_reduce_dict({"hits": hits, "n": n})
    return sums["hits"] / max(sums["n"], 1)


def train(
    data: str | Path,
    settings: TrainSettings | None = None,
    snell_config: SnellConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    show_progress: bool = True,
) -> TrainResult:
    """Fine-tune ``settings.model`` with SNELL on the ``train`` split of ``data``.

    Args:
        data: a VTAB-1k list-file folder or an ImageFolder (see :func:`snell.data.load_split`).
        settings: :class:`TrainSettings` (defaults: the official VTAB recipe on ViT-B/16).
        snell_config: the adapter (default ``SnellConfig(r=8, sparsity=0.9)``).
        out_dir: if given, the adapter is saved to ``out_dir/adapter`` (rank 0 only).
        device: ``auto`` / ``cpu`` / ``cuda``; under torchrun each rank takes its local GPU.
    Returns:
        :class:`TrainResult` with per-epoch ``train_loss``, ``final_train_loss``,
        ``<eval_split>_top1`` (a fraction) and ``skipped_images``.
    """
    from labcore.runs import Timer, seed_everything

    s = settings or TrainSettings()
    cfg = snell_config or SnellConfig(r=8, sparsity=0.9)
    state = dist.init(device)
    device = state.device
    dist.check_precision(s.precision, device)
    per_rank = dist.per_rank_batch(s.batch_size)
    seed_everything(seed)  # the same initialisation on every rank
    train_set = load_split(data, "train", s.img_size, s.layout, s.skip_bad_images)
    test_set = None
    if s.eval_split:
        test_set = load_split(data, s.eval_split, s.img_size, s.layout, s.skip_bad_images)
    num_classes = _num_classes(train_set)
    model = create_model(s.model, s.weights, num_classes, s.img_size, s.drop_path, s.model_kwargs)
    if cfg.base_model_name_or_path is None:
        cfg.base_model_name_or_path = s.weights or s.model
    model = get_snell_model(model, cfg).to(device)
    if dist.is_main() and show_progress:
        model.print_trainable_parameters()
    ddp = dist.wrap_model(model)
    opt = make_optimizer(model, s.lr, s.weight_decay)
    sched = cosine_schedule(opt, s.epochs, s.warmup_epochs)
    scaler = dist.grad_scaler(s.precision, device)
    sampler = _sampler(train_set, shuffle=True, seed=seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=per_rank, sampler=sampler, num_workers=s.workers
    )
    losses = []
    with Timer(device) as timer:
        for epoch in progress(range(s.epochs), desc="epochs", **_quiet(show_progress)):
            sched.step(epoch)
            sampler.set_epoch(epoch)
            losses.append(_train_epoch(ddp, loader, opt, scaler, s.precision, device, False))
    metrics: dict[str, Any] = {
        "train_loss": losses,
        "final_train_loss": losses[-1],
        "skipped_images": getattr(train_set, "skipped", 0),
        "world_size": state.world_size,
        "per_rank_batch": per_rank,
    }
    timings = {"train_s": timer.elapsed}
    if test_set is not None:
        with Timer(device) as t_eval:
            metrics[f"{s.eval_split}_top1"] = _top1(
                model, test_set, per_rank, s.workers, s.precision, device
            )
        metrics["skipped_images"] += getattr(test_set, "skipped", 0)
        timings["eval_s"] = t_eval.elapsed
    adapter_dir = None
    if out_dir is not None and dist.is_main():
        adapter_dir = model.save_pretrained(Path(out_dir) / "adapter")
        (adapter_dir / "train_settings.json").write_text(json.dumps(asdict(s), indent=2) + "\n")
    dist.barrier()
    return TrainResult(model, metrics, timings, adapter_dir, num_classes)


def evaluate(
    data: str | Path,
    adapter_dir: str | Path,
    settings: TrainSettings | None = None,
    *,
    split: str = "test",
    device: str | torch.device = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Top-1 of a saved adapter (``save_pretrained`` folder) on ``split`` of ``data``.

    The backbone is ``settings.model`` with ``settings.weights`` (the same as for training; a
    random-init backbone, ``weights=None``, is rebuilt from ``seed``, so pass the training seed);
    returns ``{"<split>_top1", "n_images", "skipped_images"}``. Distributed like :func:`train`.
    """
    from labcore.runs import seed_everything

    s = settings or TrainSettings()
    state = dist.init(device)
    device = state.device
    dist.check_precision(s.precision, device)
    per_rank = dist.per_rank_batch(s.batch_size)
    adapter_dir = Path(adapter_dir)
    try:
        SnellConfig.from_pretrained(adapter_dir)
    except (ValueError, TypeError) as e:  # bad JSON or unknown keys
        raise UserError(f"{adapter_dir}: unusable adapter_config.json: {e}") from None
    dataset = load_split(data, split, s.img_size, s.layout, s.skip_bad_images)
    seed_everything(seed)
    model = create_model(s.model, s.weights, _num_classes(dataset), s.img_size,
                         extra=s.model_kwargs)  # fmt: skip
    try:
        model = from_pretrained(model, adapter_dir).to(device)
    except FileNotFoundError:
        raise
    except Exception as e:  # safetensors header errors, shape or key mismatches
        raise UserError(f"{adapter_dir}: {' '.join(str(e).split())}") from None
    top1 = _top1(model, dataset, per_rank, s.workers, s.precision, device)
    return {f"{split}_top1": top1, "n_images": len(dataset),
            "skipped_images": getattr(dataset, "skipped", 0)}  # fmt: skip
