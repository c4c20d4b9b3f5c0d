"""The offline demonstration on the synthetic long-tailed scenes (spec C1), with the
pre-registered acceptance checks. A stand-in benchmark: its numbers are not the paper's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch

from aucseg.bank import TMemoryBank
from aucseg.classes import class_groups, select_tail_classes
from aucseg.data import TensorSegmentation, normalize
from aucseg.loss import SegmentationLoss
from aucseg.model import build_segmenter
from aucseg.synthetic import CLASS_NAMES, make_synthetic
from aucseg.train import TrainConfig, evaluate, group_scores, train
from labcore.memory import saved_activation_bytes
from labcore.runs import Timer, seed_everything

__all__ = ["ARMS", "acceptance", "activation_bytes", "covering_batch_size", "run_demo"]

# arm -> (w_auc, bank); the spec's arm (d), CE at the covering batch B*, is measured for memory
# only: training it is ~40x the compute of the other arms.
ARMS = {"ce": (0.0, False), "ce+auc": (1.0, False), "ce+auc+bank": (1.0, True)}
BANK = {"memory_size": 5, "p_sample": 1.0, "p_resize": 0.6}


def covering_batch_size(presence: Sequence[float], target: float = 0.9) -> int:
    r"""Smallest B with :math:`\prod_c (1 - (1 - q_c)^B) \ge` ``target`` (independent images)."""
    q = np.asarray(presence, dtype=np.float64)
    if (q <= 0).any():
        raise ValueError("every class needs a positive presence rate")
    b = 1
    while np.prod(1 - (1 - q) ** b) < target:
        b += 1
    return b


def activation_bytes(model: torch.nn.Module, batch: int, size: int, num_classes: int) -> int:
    """Bytes saved for backward by one training forward (model + AUC + CE) at ``batch``."""
    model.train()
    x = normalize(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8))
    y = torch.randint(0, num_classes, (batch, size, size))
    criterion = SegmentationLoss(w_auc=1.0)
    return saved_activation_bytes(lambda: criterion(model(x), y)["loss"])


def acceptance(mean: dict[str, dict[str, float]], memory: dict[str, float]) -> dict[str, dict]:
    """The spec's pre-registered thresholds (fixed before any run), each with met: bool.

    Checks that need an arm which was not run are left out."""
    a, b, c = (mean.get(arm) for arm in ARMS)
    checks = []  # (name, value, threshold, met)
    if a and c:
        t = a["tail_mIoU"] + 5.0
        checks.append(("tail(c) >= tail(a) + 5.0", c["tail_mIoU"], t, c["tail_mIoU"] >= t))
        t = a["mIoU"] - 1.0
        checks.append(("mIoU(c) >= mIoU(a) - 1.0", c["mIoU"], t, c["mIoU"] >= t))
    if a and b and c:
        lo, hi = sorted((a["tail_mIoU"], c["tail_mIoU"]))
        v = b["tail_mIoU"]
        checks.append(("tail(b) between tail(a) and tail(c)", v, [lo, hi], lo <= v <= hi))
    if c:
        v = c["tail_coverage"]
        checks.append(("coverage(c, B=4) >= 0.9", v, 0.9, v >= 0.9))
    if a:
        v = a["tail_coverage"]
        checks.append(("coverage(a, B=4) <= 0.3", v, 0.3, v <= 0.3))
    v, t = memory["activation_bytes_b4"], 0.35 * memory["activation_bytes_bstar"]
    checks.append(("activations(c, B=4) <= 0.35 x activations(d, B*)", v, t, v <= t))
    return {n: {"value": v, "threshold": t, "met": bool(m)} for n, v, t, m in checks}


def run_demo(
    *,
    iters: int = 250,
    seeds: Sequence[int] = (0, 1, 2),
    n_train: int = 2000,
    n_val: int = 400,
    size: int = 96,
    batch_size: int = 4,
    backbone: str = "resnet18",
    lr: float = 1e-3,
    data_seed: int = 0,
    device: str | torch.device = "cpu",
    arms: Sequence[str] = tuple(ARMS),
    log=print,
) -> dict:
    """Train each of ``arms`` (keys of :data:`ARMS`) for each seed; evaluate on the val scenes.

    Returns metrics per arm (mean and per seed, IoU in %), tail coverage, memory, acceptance.
    """
    with Timer() as t_data:
        train_set, val_set = make_synthetic(n_train, n_val, size, data_seed)
    k = len(CLASS_NAMES)
    counts = train_set.pixel_counts
    small_index = sorted(select_tail_classes(counts, head_share=0.99))  # the bank's tail
    groups = class_groups(counts, cuts=(3, 6))  # evaluation groups, by training pixel count
    presence = train_set.presence
    b_star = covering_batch_size(presence[small_index])
    log(
        f"synthetic scenes: {n_train} train / {n_val} val at {size}x{size}, {t_data.elapsed:.1f}s; "
        f"bank tail classes {small_index}, presence {np.round(presence[small_index], 3).tolist()}, "
        f"covering batch B* = {b_star}"
    )
    val = TensorSegmentation(val_set.images, val_set.labels)
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; choose from {list(ARMS)}")
    per_seed: dict[str, list[dict]] = {arm: [] for arm in ARMS if arm in arms}
    bank_bytes, timings = 0, {}
    for seed in seeds:
        for arm in per_seed:
            w_auc, use_bank = ARMS[arm]
            seed_everything(seed)
            bank = TMemoryBank(k, small_index, seed=seed, **BANK) if use_bank else None
            ds = TensorSegmentation(
                train_set.images, train_set.labels, train=True, bank=bank, seed=seed
            )
            model = build_segmenter(k, backbone)
            cfg = TrainConfig(iters=iters, batch_size=batch_size, lr=lr, w_auc=w_auc)
            with Timer() as t:
                hist = train(
                    model,
                    ds,
                    cfg,
                    device=device,
                    seed=seed,
                    coverage_classes=small_index,
                    desc=f"{arm} seed {seed}",
                )
            cm = evaluate(model, val, k, device=device, batch_size=50)
            scores = {n: 100 * v for n, v in group_scores(cm, groups).items()}
            scores["per_class_IoU"] = (100 * cm.iou()).round(2).tolist()
            row = {**scores, **hist, "train_s": t.elapsed}
            per_seed[arm].append(row)
            timings[f"{arm}_seed{seed}_s"] = t.elapsed
            if bank is not None:
                bank_bytes = max(bank_bytes, bank.nbytes)
            log(
                f"  seed {seed} {arm:<12} mIoU {row['mIoU']:.2f}  tail {row['tail_mIoU']:.2f}  "
                f"coverage {hist['tail_coverage']:.2f}  ({t.elapsed:.0f}s)"
            )
    keys = ["mIoU", "head_mIoU", "middle_mIoU", "tail_mIoU", "aAcc", "tail_coverage"]
    mean = {
        arm: {kk: float(np.nanmean([r[kk] for r in rows])) for kk in keys}
        for arm, rows in per_seed.items()
    }
    std = {
        arm: {kk: float(np.nanstd([r[kk] for r in rows])) for kk in keys}
        for arm, rows in per_seed.items()
    }

    model = build_segmenter(k, backbone)
    memory = {
        "activation_bytes_b4": activation_bytes(model, batch_size, size, k),
        "activation_bytes_bstar": activation_bytes(model, b_star, size, k),
        "b_star": b_star,
        "bank_host_bytes_crops": bank_bytes,
        "bank_host_bytes_whole_images": len(small_index)
        * BANK["memory_size"]
        * 3
        * size
        * size
        * 4,
    }
    return {
        "dataset": {
            "name": "synthetic-longtail-scenes",
            "n_train": n_train,
            "n_val": n_val,
            "size": size,
            "pixel_counts": counts.tolist(),
            "presence": np.round(presence, 4).tolist(),
            "small_index": small_index,
            "groups": groups,
        },
        "config": {
            "iters": iters,
            "seeds": list(seeds),
            "batch_size": batch_size,
            "lr": lr,
            "backbone": backbone,
            "bank": BANK,
            "arms": {a: {"w_auc": ARMS[a][0], "bank": ARMS[a][1]} for a in per_seed},
            "train": asdict(TrainConfig(iters=iters)),
        },
        "mean": mean,
        "std": std,
        "per_seed": per_seed,
        "memory": memory,
        "acceptance": acceptance(mean, memory),
        "timings": timings,
    }


def format_table(result: dict) -> str:
    """A plain-text results table (mean ± std over seeds, IoU in %)."""
    cols = ["mIoU", "head_mIoU", "middle_mIoU", "tail_mIoU", "tail_coverage"]
    lines = [f"{'arm':<14}" + "".join(f"{c:>18}" for c in cols)]
    for arm, m in result["mean"].items():
        s = result["std"][arm]
        lines.append(f"{arm:<14}" + "".join(f"{m[c]:>11.2f} ± {s[c]:<4.2f}" for c in cols))
    mem = result["memory"]
    lines.append(
        f"saved activations: B=4 {mem['activation_bytes_b4'] / 2**20:.1f} MiB vs "
        f"B*={mem['b_star']} {mem['activation_bytes_bstar'] / 2**20:.1f} MiB"
    )
    for name, chk in result["acceptance"].items():
        value, threshold = (
            np.round(np.asarray(chk[k], dtype=float), 3).tolist() for k in ("value", "threshold")
        )
        lines.append(
            f"[{'met' if chk['met'] else 'MISSED'}] {name}: {value} (threshold {threshold})"
        )
    return "\n".join(lines)
