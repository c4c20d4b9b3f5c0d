"""``snell demo``: a small, genuine pretrain -> transfer experiment on scikit-learn's digits.

1. Stand-in pretraining: a timm ``VisionTransformer`` is trained in full on digits 0-4 (cached
   in the output folder). ``arch="spec"`` is the spec's (img 32, patch 4, dim 192, depth 6,
   3 heads, 50 epochs at batch 32: ~200 steps per arm). The default ``"small"`` is right-sized
   for 2 CPU cores: img 16, patch 4, dim 64, depth 4, 2 heads, and many more steps (200 epochs
   at batch 16: 1,400 steps per arm, closer to the official VTAB recipe's ~6,250), the same
   budget and seeds for every arm.
2. Transfer to digits 5-9 under a domain shift (transposed, inverted), 20 images per class,
   with each method below; s for SNELL and the stored-index baseline is picked on validation.
3. Report top-1 test accuracy (mean ± std over seeds), validation learning curves, and the
   update's scale ‖ΔW‖_F / ‖W0‖_F over the adapted matrices during training. This is a
   stand-in, not the paper's VTAB / FGVC experiment.

Why the update scale matters: SNELL's gated update ``ΔW ⊙ |ΔW|`` is quadratic in the kernel
matrix, whose entries start near 1e-3 and move by about ``0.1 · lr`` per Adam step (the fixed
α = ±0.1), so at equal steps it is ``~0.1·lr·t`` times KLoRA's: tiny after 200 steps, of the
same order after thousands.
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
    "PROTOCOLS",
    "DemoSettings",
    "acceptance",
    "format_table",
    "plot_demo",
    "pretrain_standin",
    "run_demo",
    "transfer",
    "update_scale",
]

STANDIN_ARCHS = {
    "spec": dict(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3),
    "small": dict(img_size=16, patch_size=4, embed_dim=64, depth=4, num_heads=2),
}
# the protocol each arch runs by default (transfer epochs, batch, pretraining epochs)
PROTOCOLS = {
    "spec": dict(epochs=50, batch_size=32, pretrain_epochs=30, warmup_epochs=5),
    "small": dict(epochs=200, batch_size=16, pretrain_epochs=30, warmup_epochs=10),
}
METHODS = ("linear_probe", "lora8", "klora8", "snell8", "full_ft", "stored_index")
TARGETS = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]


@dataclass
class DemoSettings:
    """The demo protocol; ``None`` fields take the arch's :data:`PROTOCOLS` values."""

    arch: str = "small"
    seeds: int = 3
    epochs: int | None = None
    pretrain_epochs: int | None = None
    sparsities: tuple[float, ...] = (0.5, 0.9)
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int | None = None
    warmup_epochs: int | None = None
    methods: tuple[str, ...] = METHODS
    curve_points: int = 10  # validation / update-scale checkpoints per run

    def __post_init__(self) -> None:
        from labcore.cli import UserError

        if self.arch not in STANDIN_ARCHS:
            raise UserError(f"unknown arch {self.arch!r}; choose one of {sorted(STANDIN_ARCHS)}")
        for k, v in PROTOCOLS[self.arch].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        for k in ("seeds", "epochs", "pretrain_epochs", "batch_size", "curve_points"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise UserError(f"{k} must be an integer >= 1, got {getattr(self, k)!r}")
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise UserError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")


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


def update_scale(model: nn.Module, backbone: dict) -> float:
    """‖ΔW‖_F / ‖W0‖_F over all adapted matrices: the gated ΔWˢ for the SNELL family, the
    weight change for full fine-tuning and the stored-index baseline (0 for the probe)."""
    from snell.layer import SnellLinear

    num, den = 0.0, 0.0
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, SnellLinear):
                num += float(m.get_delta_weight().square().sum())
                den += float(m.base_layer.weight.square().sum())
            elif isinstance(m, nn.Linear) and any(name.endswith(t) for t in TARGETS):
                w0 = backbone[f"{name}.weight"].to(m.weight.device)
                num += float((m.weight - w0).square().sum())
                den += float(w0.square().sum())
    return (num / den) ** 0.5 if den else 0.0


def transfer(
    method: str,
    backbone: dict,
    data: DigitsTransfer,
    seed: int,
    s: DemoSettings,
    device: torch.device,
    sparsity: float = 0.0,
) -> dict:
    """Train one method on the target task; returns val / test accuracy and the curves
    (validation accuracy and update scale at ``curve_points`` epochs, by optimizer step)."""
    model, opt = _build(method, backbone, sparsity, data, seed, s, device)
    sched = cosine_schedule(opt, s.epochs, warmup_epochs=s.warmup_epochs)
    g = torch.Generator().manual_seed(seed)
    X, y = data["train"]
    steps_per_epoch = -(-len(y) // s.batch_size)
    marks = {round(s.epochs * (i + 1) / s.curve_points) for i in range(s.curve_points)}
    curve = {"step": [], "val": [], "scale": []}
    for epoch in range(s.epochs):
        sched.step(epoch)
        train_epoch(
            model, tensor_batches(X, y, s.batch_size, shuffle=True, generator=g), opt, device
        )
        if epoch + 1 in marks:
            curve["step"].append((epoch + 1) * steps_per_epoch)
            curve["val"].append(evaluate_top1(model, tensor_batches(*data["val"], 256), device))
            curve["scale"].append(update_scale(model, backbone))
    test = evaluate_top1(model, tensor_batches(*data["test"], 256), device)
    return {"val": curve["val"][-1], "test": test, "curve": curve}


def run_demo(s: DemoSettings, out_dir: Path, device: torch.device, seed: int = 0) -> dict:
    """The whole experiment; returns ``{"source_acc", "results": {method: {...}}}``."""
    backbone = None
    source_acc = float("nan")
    results: dict[str, dict] = {
        m: {"test": [], "val": [], "sparsity": [], "curves": []} for m in s.methods
    }
    runs = [(k, m) for k in range(s.seeds) for m in s.methods]
    img = STANDIN_ARCHS[s.arch]["img_size"]
    for k, method in progress(runs, desc="transfer runs"):
        data = digits_transfer(seed=seed + k, img_size=img)
        if backbone is None:
            cache = out_dir / f"standin_vit_{s.arch}_e{s.pretrain_epochs}.safetensors"
            backbone, source_acc = pretrain_standin(data, s.arch, s.pretrain_epochs, cache, device)
        grid = s.sparsities if method in ("snell8", "stored_index") else (0.0,)
        trials = [(transfer(method, backbone, data, seed + k, s, device, sp), sp) for sp in grid]
        best, sp = max(trials, key=lambda t: t[0]["val"])  # pick s on validation
        for key, v in (("val", best["val"]), ("test", best["test"]), ("sparsity", sp)):
            results[method][key].append(v)
        results[method]["curves"].append(best["curve"])
    for r in results.values():
        r["test_mean"] = float(np.mean(r["test"]))
        r["test_std"] = float(np.std(r["test"]))
        r["final_update_scale"] = float(np.mean([c["scale"][-1] for c in r["curves"]]))
    return {"source_acc": source_acc, "results": results}


def plot_demo(results: dict, out_dir: Path) -> list[Path]:
    """PNGs beside the JSON: test top-1 per method (mean ± std over seeds), mean validation
    curves, and the update's scale against optimizer steps (log-log)."""
    from labcore.plot import bar_plot, line_plot

    r = results["results"]
    paths = [
        bar_plot(out_dir / "snell_demo_top1.png",
                 {m: (100 * v["test_mean"], 100 * v["test_std"]) for m, v in r.items()},
                 ylabel="test top-1 % (mean ± std over seeds)",
                 title="snell demo: digits 0-4 -> shifted 5-9 (stand-in)"),
        line_plot(out_dir / "snell_demo_curves.png",
                  {m: (v["curves"][0]["step"],
                       [100 * float(np.mean(c)) for c in zip(*[c["val"] for c in v["curves"]])])
                   for m, v in r.items()},
                  xlabel="optimizer step", ylabel="validation top-1 % (mean over seeds)",
                  title="snell demo: learning curves"),
        line_plot(out_dir / "snell_demo_update_scale.png",
                  {m: (v["curves"][0]["step"],
                       [float(np.mean(c)) for c in zip(*[c["scale"] for c in v["curves"]])])
                   for m, v in r.items() if m != "linear_probe"},
                  xlabel="optimizer step", ylabel="||ΔW||_F / ||W0||_F (adapted matrices)",
                  title="snell demo: update scale", loglog=True),
    ]  # fmt: skip
    return [p for p in paths if p is not None]


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
    lines = [
        "| method | test top-1 % (mean ± std) | per seed | s picked | final ‖ΔW‖/‖W0‖ |",
        "|---|---|---|---|---|",
    ]
    for m, r in results["results"].items():
        sp = ", ".join(f"{v:g}" for v in r["sparsity"]) if m in ("snell8", "stored_index") else "–"
        per = ", ".join(f"{100 * v:.1f}" for v in r["test"])
        lines.append(f"| {m} | {100 * r['test_mean']:.1f} ± {100 * r['test_std']:.1f} | {per} | "
                     f"{sp} | {r.get('final_update_scale', float('nan')):.2e} |")  # fmt: skip
    return "\n".join(lines)
