"""``snell bench``: the memory benchmark on real-size ViT-B/16 (random init, fp32, AdamW).

Configurations (all on the same 72 targets: q, k, v split from qkv, proj, fc1, fc2; head and
cls_token trainable): full fine-tuning, LoRA-8, KLoRA-8, SNELL-8 (s = 0.9) with and without
recompute, and the stored-index baseline (s = 0.9, bool mask). Per configuration:

1. static training-state bytes after an optimizer step (params + grads + AdamW moments, + masks),
   compared with the spec's closed-form counts (M1);
2. bytes saved for backward by one training forward (``labcore.memory.saved_activation_bytes``);
3. peak memory of building the model and running two training steps, with
   ``labcore.memory.peak_memory``:

   - ``peak_bytes_b*``, the figure the checks use: CUDA ``max_memory_allocated`` on a GPU; on CPU
     the peak of live tensor-storage bytes (``method="tensors"``), the CPU analogue of the GPU
     peak the paper reports;
   - ``peak_rss_bytes_b*`` (CPU only): the spec's protocol, the peak RSS of a fresh subprocess
     above its RSS after imports. It also holds what glibc keeps after ``free``, which differs
     between configurations by more than the effects measured here, so it is reported, not checked.

The training step follows the official ``engine.py`` by default (``loop="official"``): old
gradients are zeroed in place at the top of the iteration, so they stay allocated through the
forward, and ``optimizer.zero_grad()`` frees them between forward and backward. The paper's memory
table was measured with that loop; for methods with full-size gradients (the stored-index
baseline, full fine-tuning) it adds one gradient set to the peak. ``loop="lean"`` frees gradients
before the forward instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from snell.config import SnellConfig
from snell.layer import SnellLinear, _split_drop_path
from snell.model import get_snell_model
from snell.sparse_baseline import StoredIndexSparse, select_gradient_masks
from snell.training import make_optimizer

__all__ = [
    "CONFIGS",
    "FULL",
    "LOOPS",
    "MB",
    "QUICK",
    "VIT_B",
    "BenchScale",
    "build_config",
    "expected_static_bytes",
    "measure",
    "memory_checks",
    "plot_peaks",
    "qkv_layer_memory",
    "run_bench",
    "train_steps",
    "training_step",
    "vit_counts",
]

MB = 1e6
TARGETS = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]
LOOPS = ("official", "lean")
CONFIGS = ("full_ft", "lora8", "klora8", "snell8", "snell8_no_recompute", "stored_index")
SPARSITY = 0.9
# ViT-B/16 counts from the spec (num_classes = 100)
VIT_B = dict(
    backbone=85_798_656, head=76_900, cls=768, sum_mn=84_934_656, adapters_r8=1_327_104, alpha=144
)


@dataclass(frozen=True)
class BenchScale:
    """The model and batches one bench run measures.

    ``FULL`` is the spec's protocol (ViT-B/16: 12 blocks of width 768 at 224², batches 8 and 2,
    peak RSS beside the tensor peak). ``QUICK`` measures the same claims on a narrower ViT with
    the same 12 blocks: width 256 (4 heads) at 112² (50 tokens), no RSS subprocesses, fewer
    repeats, ~1/6 of the work of 2 full-width blocks. It keeps ViT-B's balances roughly: the
    recomputed ΔW, the weights, their gradients and AdamW state all scale with width², and
    tokens/width (activations against weights) is 50/256 against 197/768.
    """

    name: str
    depth: int
    batch_sizes: tuple[int, ...]
    rss: bool
    qkv_batch: int
    qkv_repeats: int
    warm_batch: int | None = None  # first (state-creating) step at this batch; None: the same
    saved_all_batches: bool = True  # saved-for-backward bytes at every batch, or the largest
    width: int = 768
    num_heads: int = 12
    img_size: int = 224
    num_classes: int = 100
    qkv_width: int = 768  # the single q|k|v layer of claims Q1/Q2
    qkv_tokens: int = 197


FULL = BenchScale("full", depth=12, batch_sizes=(8, 2), rss=True, qkv_batch=8, qkv_repeats=7)
QUICK = BenchScale("quick", depth=12, batch_sizes=(8, 2), rss=False, qkv_batch=2, qkv_repeats=3,
                   warm_batch=2, saved_all_batches=False, width=256, num_heads=4,
                   img_size=112)  # fmt: skip


def vit_counts(scale: BenchScale = FULL, r: int = 8) -> dict[str, int]:
    """Closed-form parameter counts of a timm ViT (patch 16, MLP ratio 4) at ``scale``."""
    D, L, C = scale.width, scale.depth, scale.num_classes
    tokens = (scale.img_size // 16) ** 2 + 1
    norms = 2 * (2 * D)
    block = norms + (3 * D * D + 3 * D) + (D * D + D) + (4 * D * D + 4 * D) + (4 * D * D + D)
    backbone = (3 * 16 * 16 * D + D) + D + tokens * D + L * block + 2 * D
    return dict(
        backbone=backbone,
        head=D * C + C,
        cls=D,
        sum_mn=12 * D * D * L,  # q, k, v, proj: D², fc1, fc2: 4D² each
        adapters=18 * r * D * L,  # r(n + m) over q, k, v (2D each), proj (2D), fc1, fc2 (5D each)
        alpha=12 * L,  # 6 adapters x 2 pieces per block
    )


def expected_static_bytes(config: str, scale: BenchScale = FULL) -> float:
    """Closed-form static bytes: 4 B per frozen value, 16 B per trained one (+ masks)."""
    c = vit_counts(scale)
    total = c["backbone"] + c["head"]
    if config == "full_ft":
        return 16 * total
    if config == "stored_index":  # trained: the adapted matrices + head + cls; bool mask each
        trained = c["sum_mn"] + c["head"] + c["cls"]
        return 4 * (total - trained) + 16 * trained + c["sum_mn"]
    alpha = 0 if config == "lora8" else c["alpha"]
    trained = c["adapters"] + c["head"] + c["cls"]
    return 4 * (total - c["head"] - c["cls"] + alpha) + 16 * trained


def _vit(device, scale: BenchScale = FULL) -> nn.Module:
    import timm

    model = timm.create_model(
        "vit_base_patch16_224", pretrained=False, num_classes=scale.num_classes,
        drop_path_rate=0.1, depth=scale.depth, img_size=scale.img_size, embed_dim=scale.width,
        num_heads=scale.num_heads,
    )  # fmt: skip
    return model.to(device)


def _batch(batch_size: int, device, seed: int = 0, scale: BenchScale = FULL):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 3, scale.img_size, scale.img_size, generator=g)
    y = torch.randint(0, scale.num_classes, (batch_size,), generator=g)
    return x.to(device), y.to(device)


def _loss(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def build_config(name: str, device, seed: int = 0, scale: BenchScale = FULL):
    """(model, optimizer, index_bytes) for one benchmark configuration, in training mode."""
    torch.manual_seed(seed)
    model = _vit(device, scale)
    index_bytes = 0
    if name == "full_ft":
        opt = make_optimizer(model, 1e-3, 0.01)
    elif name == "stored_index":
        model.requires_grad_(False)
        model.head.requires_grad_(True)
        model.cls_token.requires_grad_(True)
        batches = [_batch(1, device, seed=1, scale=scale)]  # mask chosen once, from a small batch
        masks = select_gradient_masks(model, _loss, batches, TARGETS, SPARSITY)
        sparse = StoredIndexSparse(model, masks, index_format="bool")
        index_bytes = sparse.index_bytes()
        opt = make_optimizer(model, 1e-3, 0.01, sparse.param_groups(0.01))
    else:
        cfg = {
            "lora8": SnellConfig(r=8, kernel="linear", init="lora", recompute=False),
            "klora8": SnellConfig(r=8, sparsity=0.0),
            "snell8": SnellConfig(r=8, sparsity=SPARSITY),
            "snell8_no_recompute": SnellConfig(r=8, sparsity=SPARSITY, recompute=False),
        }[name]
        model = get_snell_model(model, cfg)
        opt = make_optimizer(model, 1e-3, 0.01)
    return model.train(), opt, index_bytes


def training_step(model: nn.Module, opt: torch.optim.Optimizer, batch, loop: str) -> None:
    """One AdamW step in the order of ``loop`` (see the module docstring)."""
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
    if loop == "official":  # engine.py: zero in place, forward, zero_grad, backward
        for p in model.parameters():
            if p.grad is not None:
                p.grad.zero_()
        loss = _loss(model, batch)
        opt.zero_grad(set_to_none=True)
    else:
        opt.zero_grad(set_to_none=True)
        loss = _loss(model, batch)
    loss.backward()
    opt.step()


def train_steps(
    name: str,
    batch_size: int,
    device: str = "cpu",
    steps: int = 2,
    loop: str = "official",
    scale: BenchScale = FULL,
) -> None:
    """Build one configuration and run ``steps`` steps (the first creates AdamW's state).

    Module level and picklable: the CPU RSS measurement runs it in a fresh subprocess.
    """
    model, opt, _ = build_config(name, torch.device(device), scale=scale)
    batch = _batch(batch_size, device, scale=scale)
    for i in range(steps):
        # the first step creates the gradients and AdamW's state; its batch size does not change
        # them, and the peak is the second step's (it holds that state), so quick runs it small
        warm = i == 0 and scale.warm_batch is not None and steps > 1
        training_step(model, opt, _batch(scale.warm_batch, device, scale=scale) if warm else batch,
                      loop)  # fmt: skip


def measure(
    name: str,
    batch_sizes: list[int],
    device: torch.device,
    peak: bool = True,
    loop: str = "official",
    scale: BenchScale = FULL,
) -> dict:
    """Static bytes, saved-for-backward bytes and peak memory of one configuration."""
    from labcore.memory import peak_memory, saved_activation_bytes, training_state_bytes

    method = "allocator" if device.type == "cuda" else "tensors"

    model, opt, index_bytes = build_config(name, device, scale=scale)
    opt.zero_grad(set_to_none=True)
    # batch 2, not 1: at batch 1 cls_token.grad is a view that pins a (197, 768) buffer
    _loss(model, _batch(2, device, scale=scale)).backward()
    opt.step()
    state = training_state_bytes(model, opt)
    row = {
        "static_bytes": state.total + index_bytes,
        "static_expected_bytes": expected_static_bytes(name, scale),
        "index_bytes": index_bytes,
        "state": state.as_dict(),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "peak_method": method,
        "loop": loop,
    }
    for b in batch_sizes if scale.saved_all_batches else [max(batch_sizes)]:
        batch = _batch(b, device, scale=scale)
        row[f"saved_bytes_b{b}"] = saved_activation_bytes(_loss, model, batch)
    del model, opt
    if peak:
        for b in batch_sizes:
            args = (train_steps, name, b, str(device))
            pm = peak_memory(*args, device=device, method=method, loop=loop, scale=scale)
            row[f"peak_bytes_b{b}"] = pm.peak_bytes
            if device.type == "cpu" and scale.rss:
                rss = peak_memory(*args, device=device, method="allocator", loop=loop,
                                  scale=scale)  # fmt: skip
                row[f"peak_rss_bytes_b{b}"] = rss.peak_bytes
    return row


def memory_checks(rows: dict, batch_sizes, scale: BenchScale = FULL, qkv: dict | None = None):
    """The spec's pre-registered thresholds M1-M5 (those measurable at these batch sizes) and
    the q|k|v layer's (Q1: live peak ≤ the official layout's; Q2: step time ≤ 1.10x it, the 10 %
    for timing noise on a shared machine), as ``(checks, claims)``: one
    ``labcore.runs.Claim`` with threshold and direction per check.

    At ``QUICK`` scale the thresholds are the same; the two absolute ones scale with the adapted
    weights: M5 needs ≥ 2·4·Σmn saved bytes, and ≥ 500 MB · Σmn / Σmn(ViT-B) of peak.
    """
    from labcore.runs import Claim

    claims: list[Claim] = []
    where = "ViT-B/16" if scale == FULL else _where(scale)

    def claim(id_, text, metric, value, threshold, higher, unit, baseline=None):
        claims.append(Claim(f"{id_} {text} ({where})", metric, value, baseline, unit,
                            threshold=threshold, higher_is_better=higher))  # fmt: skip

    rel = max(
        abs(r["static_bytes"] - r["static_expected_bytes"]) / r["static_expected_bytes"]
        for r in rows.values()
    )
    claim("M1", "static bytes match the closed-form counts, max rel. error over configs",
          "static_rel_error", rel, 1e-3, False, "")  # fmt: skip
    peak = {b: {n: r.get(f"peak_bytes_b{b}") for n, r in rows.items()} for b in batch_sizes}
    ratios = [
        ("M2", "lora8", 1.15, 8),
        ("M3", "stored_index", 0.80, 8),
        ("M3", "stored_index", 0.60, 2),
        ("M4", "full_ft", 0.60, 2),
    ]
    for id_, other, thr, b in ratios:
        if b in peak and peak[b].get("snell8") and peak[b].get(other):
            value = peak[b]["snell8"] / peak[b][other]
            claim(id_, f"peak memory SNELL-8 / {other} at batch {b}", f"peak_ratio_b{b}",
                  value, thr, False, "x")  # fmt: skip
    b = max(batch_sizes)
    sum_mn = vit_counts(scale)["sum_mn"]
    added = rows["snell8_no_recompute"][f"saved_bytes_b{b}"] - rows["snell8"][f"saved_bytes_b{b}"]
    claim("M5", f"saved-for-backward bytes added by turning recompute off, batch {b}",
          f"saved_added_MB_b{b}", added / MB, 2 * 4 * sum_mn / MB, True, "MB")  # fmt: skip
    if peak[b].get("snell8") and peak[b].get("snell8_no_recompute"):
        gap = peak[b]["snell8_no_recompute"] - peak[b]["snell8"]
        need = 500.0 * sum_mn / VIT_B["sum_mn"]
        claim("M5", f"peak memory added by turning recompute off, batch {b}",
              f"peak_added_MB_b{b}", gap / MB, need, True, "MB")  # fmt: skip
    if qkv:
        fused, off = qkv["fused"], qkv["official"]
        text = "fused q|k|v layer {} / official separate q, k, v (fwd+bwd)"
        peak_ratio = fused["peak_bytes"] / off["peak_bytes"]
        claim("Q1", text.format("live peak"), "qkv_peak_ratio", peak_ratio, 1.0, False, "x")
        time_ratio = fused["time_s"] / off["time_s"]
        claim("Q2", text.format("step time"), "qkv_time_ratio", time_ratio, 1.10, False, "x")
    checks = [
        {"id": c.claim.split()[0], "what": c.claim, "value": c.value, "threshold": c.threshold,
         "met": c.met} for c in claims
    ]  # fmt: skip
    return checks, claims


def _where(scale: BenchScale) -> str:
    return f"ViT {scale.depth}x{scale.width} at {scale.img_size}²"


def plot_peaks(rows: dict, batch_sizes, path: str | Path, scale: BenchScale = FULL):
    """Peak live-tensor memory per configuration against batch size (log-log), as a PNG."""
    from labcore.plot import line_plot

    bs = sorted(batch_sizes)
    series = {
        LABELS[name]: (bs, [row[f"peak_bytes_b{b}"] / MB for b in bs])
        for name, row in rows.items()
        if all(row.get(f"peak_bytes_b{b}") for b in bs)
    }
    where = "ViT-B/16" if scale == FULL else _where(scale)
    return line_plot(path, series, xlabel="batch size", ylabel="peak live tensor memory (MB)",
                     title=f"snell bench: one AdamW step, {where}, fp32", loglog=True)  # fmt: skip


LABELS = {
    "full_ft": "full FT",
    "lora8": "LoRA-8",
    "klora8": "KLoRA-8",
    "snell8": "SNELL-8",
    "snell8_no_recompute": "SNELL-8 no recompute",
    "stored_index": "stored index",
}


def run_bench(
    scale: BenchScale,
    device: torch.device,
    *,
    peak: bool = True,
    loop: str = "official",
    log=print,
) -> dict:
    """Every measurement of ``snell bench`` at ``scale``: rows per configuration, the q|k|v
    layer, checks and claims. ``log`` receives one line per configuration."""
    from labcore.cli import progress

    rows = {}
    t0 = time.perf_counter()
    for name in progress(CONFIGS, desc="configs", leave=False):
        rows[name] = measure(name, list(scale.batch_sizes), device, peak=peak, loop=loop,
                             scale=scale)  # fmt: skip
        figures = ", ".join(f"{k}={v / MB:.1f}MB" for k, v in rows[name].items() if "bytes" in k)
        log(f"{name}: {figures} [{time.perf_counter() - t0:.0f} s]")
    qkv = None
    if peak:
        qkv = qkv_layer_memory(scale.qkv_width, scale.qkv_batch, scale.qkv_tokens,
                               repeats=scale.qkv_repeats)  # fmt: skip
        log("q|k|v layer: " + ", ".join(
            f"{k} peak {v['peak_bytes'] / MB:.1f} MB, {1e3 * v['time_s']:.0f} ms"
            for k, v in qkv.items()
        ))  # fmt: skip
    checks, claims = memory_checks(rows, scale.batch_sizes, scale, qkv)
    return {"rows": rows, "qkv": qkv, "checks": checks, "claims": claims}


# ------------------------------------------------------------------------------ one q|k|v layer
QKV_LAYOUTS = ("fused", "joint_0.2", "official")


def _qkv_layouts(width: int, seed: int = 0) -> dict:
    """The three ways to run one q|k|v adapter with equal parameters (a forward callable each).

    * ``fused``: this package's ``SnellLinear`` over timm's fused ``attn.qkv`` (splits run one
      after another, each in its own checkpoint, added into the base output in place);
    * ``joint_0.2``: snell 0.2.0's forward of the same layer: the three ΔW, their distances and
      gates computed at once in one checkpoint, then added;
    * ``official``: the official code's layout, three separate n x n linears with their own
      adapters and checkpoints, fed the same dropped copy of the input; returns (q, k, v).
    """
    torch.manual_seed(seed)
    cfg = SnellConfig(r=8, sparsity=SPARSITY)
    fused = SnellLinear(nn.Linear(width, 3 * width), cfg, splits=3).train()
    sep = []
    for s in range(3):
        layer = SnellLinear(nn.Linear(width, width), cfg, dropout=0.0).train()
        with torch.no_grad():
            rows = slice(s * width, (s + 1) * width)
            layer.base_layer.weight.copy_(fused.base_layer.weight[rows])
            layer.base_layer.bias.copy_(fused.base_layer.bias[rows])
            for name in ("snell_A", "snell_B", "snell_alpha"):
                getattr(layer, name)["default"].copy_(getattr(fused, name)["default"][s : s + 1])
        sep.append(layer)
    p_drop, p_path = cfg.adapter_dropout, cfg.adapter_drop_path

    def joint(x):
        A, B, alpha = fused._factors("default")
        xd = nn.functional.dropout(x, p_drop, True)
        d = torch.utils.checkpoint.checkpoint(fused._delta_output, xd, A, B, alpha,
                                              use_reentrant=False)  # fmt: skip
        return fused.base_layer(x) + _split_drop_path(d, p_path, 3, True)

    def official(x):
        xd = nn.functional.dropout(x, p_drop, True)
        outs = []
        for layer in sep:
            d = layer._checkpointed(True, xd, *layer._factors("default"))
            outs.append(layer.base_layer(x) + _split_drop_path(d, p_path, 1, True))
        return tuple(outs)

    params = {
        "fused": list(fused.parameters()),
        "joint_0.2": list(fused.parameters()),
        "official": [p for layer in sep for p in layer.parameters()],
    }
    return {"fused": fused, "joint_0.2": joint, "official": official}, params


def _fwd_bwd(fn, x: torch.Tensor) -> None:
    out = fn(x)
    out = out if isinstance(out, tuple) else (out,)
    sum(o.sum() for o in out).backward()


def qkv_layer_memory(
    width: int = 768, batch: int = 8, tokens: int = 197, repeats: int = 5, seed: int = 0
) -> dict:
    """Live peak (``TensorMemoryTracker``) and step time of one forward + backward of a q|k|v
    adapter layer (r = 8, s = 0.9) in each of :data:`QKV_LAYOUTS`, on an input of
    (batch, tokens, width) that requires grad (as inside a network).

    Returns ``{layout: {"peak_bytes", "time_s"}}``; ``time_s`` is the median over ``repeats``
    rounds, the layouts interleaved within each round so that machine load hits them alike.
    """
    from labcore.memory import TensorMemoryTracker

    fns, params = _qkv_layouts(width, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, width, generator=g).requires_grad_(True)

    def clear():
        x.grad = None
        for ps in params.values():
            for p in ps:
                p.grad = None

    out = {}
    for name, fn in fns.items():
        _fwd_bwd(fn, x)  # warm-up (allocations of first calls)
        clear()
        with TensorMemoryTracker("cpu" if x.device.type == "cpu" else x.device) as mem:
            _fwd_bwd(fn, x)
        clear()
        out[name] = {"peak_bytes": mem.peak_bytes, "times": []}
    import time

    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            _fwd_bwd(fn, x)
            out[name]["times"].append(time.perf_counter() - t0)
            clear()
    for row in out.values():
        row["time_s"] = float(sorted(row["times"])[len(row["times"]) // 2])
    return out
