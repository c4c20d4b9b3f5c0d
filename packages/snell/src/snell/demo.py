"""``snell demo``: a small, genuine pretrain -> transfer experiment on scikit-learn's digits.

1. Stand-in pretraining: a timm ``VisionTransformer`` is trained in full on digits 0-4 (cached
   in the output folder). ``arch="spec"`` is the spec's (img 32, patch 4, dim 192, depth 6,
   3 heads); the default ``"small"`` (patch 8, dim 96, depth 4) is ~16x cheaper so the demo
   fits a few minutes on 2 shared CPU cores.
2. Transfer to digits 5-9 under a domain shift (transposed, inverted), 20 images per class,
   with each method below; s for SNELL and the stored-index baseline is picked on validation.
3. Report top-1 test accuracy (mean ± std over seeds). This is a stand-in, not the paper's
   VTAB / FGVC experiment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from labcore.cli import progress
from snell.config import SnellConfig
from snell.data import DigitsTransfer, digits_transfer
from snell.model import get_snell_model
from snell.sparse_baseline import StoredIndexSparse, select_gradient_masks
from snell.training import (
    cosine_schedule,
    evaluate_top1,
    make_optimizer,
    tensor_batches,
    train_epoch,
)

__all__ = [
    "METHODS",
    "DemoSettings",
    "acceptance",
    "format_table",
    "pretrain_standin",
    "run_demo",
    "transfer",
]

STANDIN_ARCHS = {
    "spec": dict(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3),
    "small": dict(img_size=32, patch_size=8, embed_dim=96, depth=4, num_heads=3),
}
METHODS = ("linear_probe", "lora8", "klora8", "snell8", "full_ft", "stored_index")
TARGETS = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]


@dataclass
class DemoSettings:
    arch: str = "small"
    seeds: int = 3
    epochs: int = 30
    pretrain_epochs: int = 30
    sparsities: tuple[float, ...] = (0.5, 0.9)
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 32
    methods: tuple[str, ...] = METHODS


def standin_vit(arch: str = "small", num_classes: int = 5, drop_path_rate: float = 0.0):
    from timm.models.vision_transformer import VisionTransformer

    if arch not in STANDIN_ARCHS:
        raise ValueError(f"unknown stand-in arch {arch!r}; choose one of {sorted(STANDIN_ARCHS)}")
    return VisionTransformer(
        num_classes=num_classes, drop_path_rate=drop_path_rate, **STANDIN_ARCHS[arch]
    )


def pretrain_standin(
    data: DigitsTransfer, arch: str, epochs: int, cache: Path | None, device: torch.device
) -> tuple[dict[str, torch.Tensor], float]:
    """Train the stand-in backbone on digits 0-4; returns (state_dict, source test accuracy)."""
    from safetensors.torch import load_file, save_file

    if cache is not None and cache.is_file():
        state = load_file(str(cache))
        acc = float(state.pop("_source_test_acc").item())
        return state, acc
    torch.manual_seed(0)
    model = standin_vit(arch).to(device)
    opt = make_optimizer(model, 1e-3, 0.05)
    sched = cosine_schedule(opt, epochs, warmup_epochs=3)
    g = torch.Generator().manual_seed(0)
    X, y = data["source_train"]
    for epoch in progress(range(epochs), desc="stand-in pretraining"):
        sched.step(epoch)
        train_epoch(model, tensor_batches(X, y, 64, shuffle=True, generator=g), opt, device)
    acc = evaluate_top1(model, tensor_batches(*data["source_test"], 256), device)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({**state, "_source_test_acc": torch.tensor(acc)}, str(cache))
    return state, acc


def _build(
    method: str,
    backbone: dict,
    sparsity: float,
    data: DigitsTransfer,
    seed: int,
    s: DemoSettings,
    device: torch.device,
):
    """Model and optimizer for one method, starting from the frozen stand-in backbone."""
    torch.manual_seed(seed)
    model = standin_vit(s.arch, drop_path_rate=0.1)
    model.load_state_dict(backbone)
    model.reset_classifier(5)
    model.to(device)
    if method == "full_ft":
        return model, make_optimizer(model, s.lr, s.weight_decay)
    if method == "linear_probe":
        model.requires_grad_(False)
        model.head.requires_grad_(True)
        return model, make_optimizer(model, s.lr, s.weight_decay)
    if method == "stored_index":
        model.requires_grad_(False)
        model.head.requires_grad_(True)
        model.cls_token.requires_grad_(True)
        X, y = data["train"]

        def loss_fn(m, batch):
            return nn.functional.cross_entropy(m(batch[0].to(device)), batch[1].to(device))

        masks = select_gradient_masks(
            model, loss_fn, tensor_batches(X, y, s.batch_size), TARGETS, sparsity
        )
        sparse = StoredIndexSparse(model, masks)
        return model, make_optimizer(
            model, s.lr, s.weight_decay, sparse.param_groups(s.weight_decay)
        )
    cfg = {
        "lora8": SnellConfig(r=8, kernel="linear", init="lora", recompute=False),
        "klora8": SnellConfig(r=8, sparsity=0.0),
        "snell8": SnellConfig(r=8, sparsity=sparsity),
    }[method]
    wrapped = get_snell_model(model, cfg)
    return wrapped, make_optimizer(wrapped, s.lr, s.weight_decay)


def transfer(
    method: str,
    backbone: dict,
    data: DigitsTransfer,
    seed: int,
    s: DemoSettings,
    device: torch.device,
    sparsity: float = 0.0,
) -> tuple[float, float]:
    """Train one method on the target task; returns (val accuracy, test accuracy)."""
    model, opt = _build(method, backbone, sparsity, data, seed, s, device)
    sched = cosine_schedule(opt, s.epochs, warmup_epochs=max(1, s.epochs // 10))
    g = torch.Generator().manual_seed(seed)
    X, y = data["train"]
    for epoch in range(s.epochs):
        sched.step(epoch)
        train_epoch(
            model, tensor_batches(X, y, s.batch_size, shuffle=True, generator=g), opt, device
        )
    val = evaluate_top1(model, tensor_batches(*data["val"], 256), device)
    test = evaluate_top1(model, tensor_batches(*data["test"], 256), device)
    return val, test


def run_demo(s: DemoSettings, out_dir: Path, device: torch.device, seed: int = 0) -> dict:
    """The whole experiment; returns ``{"source_acc", "results": {method: {...}}}``."""
    unknown = set(s.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    backbone = None
    source_acc = float("nan")
    results: dict[str, dict] = {m: {"test": [], "val": [], "sparsity": []} for m in s.methods}
    runs = [(k, m) for k in range(s.seeds) for m in s.methods]
    for k, method in progress(runs, desc="transfer runs"):
        data = digits_transfer(seed=seed + k)
        if backbone is None:
            cache = out_dir / f"standin_vit_{s.arch}_e{s.pretrain_epochs}.safetensors"
            backbone, source_acc = pretrain_standin(data, s.arch, s.pretrain_epochs, cache, device)
        grid = s.sparsities if method in ("snell8", "stored_index") else (0.0,)
        trials = [(transfer(method, backbone, data, seed + k, s, device, sp), sp) for sp in grid]
        (val, test), sp = max(trials, key=lambda t: t[0][0])  # pick s on validation
        for key, v in (("val", val), ("test", test), ("sparsity", sp)):
            results[method][key].append(v)
    for r in results.values():
        r["test_mean"] = float(np.mean(r["test"]))
        r["test_std"] = float(np.std(r["test"]))
    return {"source_acc": source_acc, "results": results}


def acceptance(results: dict) -> dict[str, bool]:
    """A1: every adapter method beats the linear probe by ≥ 5 points; A2: SNELL ≥ LoRA − 2."""
    r = results["results"]
    out = {}
    if "linear_probe" in r:
        probe = r["linear_probe"]["test_mean"]
        adapters = [m for m in r if m != "linear_probe"]
        out["A1_adapters_beat_probe_by_5pts"] = all(
            r[m]["test_mean"] >= probe + 0.05 for m in adapters
        )
    if "snell8" in r and "lora8" in r:
        out["A2_snell_ge_lora_minus_2pts"] = (
            r["snell8"]["test_mean"] >= r["lora8"]["test_mean"] - 0.02
        )
    return out


def format_table(results: dict) -> str:
    lines = ["| method | test top-1 % (mean ± std) | s picked |", "|---|---|---|"]
    for m, r in results["results"].items():
        sp = ", ".join(f"{v:g}" for v in r["sparsity"]) if m in ("snell8", "stored_index") else "–"
        lines.append(f"| {m} | {100 * r['test_mean']:.1f} ± {100 * r['test_std']:.1f} | {sp} |")
    return "\n".join(lines)
