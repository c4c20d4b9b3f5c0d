"""The offline demonstration: CML vs DPCML on the synthetic multi-interest set (spec C2).

Arms (d = 32, λ = 1, Adam 1e-3, S = 10, best epoch by validation P@3): CML (C = 1, η = 0) and
DPCML (C = 3, η = 10, δ1 = 0.05, δ2 = 0.25), each with uniform and hard sampling, plus
DPCML-hard with η = 0 to show what DCRS does. Pre-registered acceptance (fixed before the first
run, never retuned) is checked by :func:`acceptance`.

Budget: every arm gets the same number of optimiser steps of the official batch of 256 tuples
(:data:`STEPS`). A uniform epoch has S = 10 times the tuples of a hard epoch (each positive pair
becomes S triplets), so equal epochs would give the hard arms a tenth of the updates; the
number of epochs of each arm is the step budget divided by its steps per epoch
(:func:`epochs_for`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from dpcml.config import DPCMLConfig
from dpcml.data import split_per_user
from dpcml.model import DPCML
from dpcml.ranking import evaluate_ranking, recommend
from dpcml.synthetic import MultiInterestData, interest_recall, make_multi_interest
from dpcml.train import fit

_OFFICIAL_KEYS = ("P@3", "R@3", "NDCG@3", "P@5", "MAP", "MRR", "AUC")

__all__ = [
    "ARMS",
    "PROTOCOL",
    "STEPS",
    "acceptance",
    "epochs_for",
    "interest_separation",
    "plot_arms",
    "run_arm",
    "summarise",
]

PROTOCOL = {"dim": 32, "margin": 1.0, "lr": 1e-3, "batch_size": 256, "num_negatives": 10,
            "delta1": 0.05, "delta2": 0.25}  # fmt: skip
STEPS = 8220  # optimiser steps per arm and seed (60 hard epochs = 6 uniform epochs here)
ARMS: dict[str, dict] = {
    "CML-uniform": {"n_vectors": 1, "dcrs_weight": 0.0, "sampling": "uniform"},
    "CML-hard": {"n_vectors": 1, "dcrs_weight": 0.0, "sampling": "hard"},
    "DPCML-uniform": {"n_vectors": 3, "dcrs_weight": 10.0, "sampling": "uniform"},
    "DPCML-hard": {"n_vectors": 3, "dcrs_weight": 10.0, "sampling": "hard"},
    "DPCML-hard-eta0": {"n_vectors": 3, "dcrs_weight": 0.0, "sampling": "hard"},
}


def interest_separation(
    model: DPCML, test: sp.csr_matrix, data: MultiInterestData
) -> tuple[float, int]:
    """Fraction of users whose majority-vote closest vector for their g2 test items differs from
    the one for their g1 test items (users with both kinds of test items), and their number."""
    test = sp.csr_matrix(test)
    rows = np.repeat(np.arange(test.shape[0]), np.diff(test.indptr))
    cat = data.item_category[test.indices]
    group = np.where(cat == data.user_major[rows], 0, np.where(cat == data.user_minor[rows], 1, -1))
    keep = group >= 0
    rows, items, group = rows[keep], test.indices[keep], group[keep]
    c = model.assignments(torch.from_numpy(rows), torch.from_numpy(items.astype(np.int64))).numpy()
    n_vec = model.config.n_vectors
    votes = np.bincount((rows * 2 + group) * n_vec + c, minlength=test.shape[0] * 2 * n_vec)
    votes = votes.reshape(test.shape[0], 2, n_vec)
    both = (votes.sum(2) > 0).all(1)
    if not both.any():
        return math.nan, 0
    winner = votes.argmax(2)
    return float((winner[both, 0] != winner[both, 1]).mean()), int(both.sum())


def epochs_for(name: str, train: sp.csr_matrix, steps: int = STEPS) -> int:
    """Epochs that give arm ``name`` about ``steps`` optimiser steps (at least one epoch)."""
    cfg = DPCMLConfig(**{**PROTOCOL, **ARMS[name]})
    tuples = train.nnz * (cfg.num_negatives if cfg.sampling == "uniform" else 1)
    return max(1, round(steps / math.ceil(tuples / cfg.batch_size)))


def run_arm(
    name: str,
    seed: int,
    data: MultiInterestData,
    split,
    *,
    steps: int = STEPS,
    device: torch.device | str = "cpu",
    progress: Callable | None = None,
) -> dict[str, float]:
    """Train one arm with one seed for ``steps`` optimiser steps (rounded to whole epochs);
    test metrics (official convention unless noted)."""
    epochs = epochs_for(name, split.train, steps)
    cfg = DPCMLConfig(**{**PROTOCOL, **ARMS[name], "epochs": epochs})
    torch.manual_seed(seed)
    model = DPCML(*data.matrix.shape, cfg)
    result = fit(model, split.train, split.val, epochs=epochs, seed=seed, device=device,
                 progress=progress)  # fmt: skip
    model.cpu()
    official = evaluate_ranking(model, split.train, split.test, ks=(3, 5, 10))
    standard = evaluate_ranking(model, split.train, split.test, ks=(10, 20), convention="standard")
    top = recommend(model, split.train, 20)
    minority, n_min = interest_recall(top, split.test, data.item_category, data.user_minor)
    majority, _ = interest_recall(top, split.test, data.item_category, data.user_major)
    separation, _ = interest_separation(model, split.test, data)
    diversity = model.diversity() if cfg.n_vectors > 1 else torch.tensor([math.nan])
    return {
        "minority_R@20": minority,
        "majority_R@20": majority,
        "R@10_standard": standard["R@10"],
        "R@20_standard": standard["R@20"],
        **{f"{k}_official": official[k] for k in _OFFICIAL_KEYS},
        "separation": separation,
        "median_diversity": float(diversity.median()),
        "best_epoch": result.best_epoch,
        "epochs": epochs,
        "steps": epochs * math.ceil(result.tuples_seen / epochs / cfg.batch_size),
        "train_seconds": result.train_seconds,
        "tuples_per_s": result.tuples_seen / max(result.train_seconds, 1e-9),
        "n_minority_users": n_min,
    }


def summarise(per_seed: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Mean and std over seeds of every metric, per arm."""
    out = {}
    for arm, runs in per_seed.items():
        keys = runs[0].keys()
        out[arm] = {k: float(np.mean([r[k] for r in runs])) for k in keys}
        out[arm].update({f"{k}_std": float(np.std([r[k] for r in runs])) for k in keys})
    return out


def acceptance(mean: dict[str, dict[str, float]]) -> dict[str, dict]:
    """The pre-registered checks of spec C2 (thresholds fixed before any run)."""
    checks = {}
    for s in ("hard", "uniform"):
        cml, dp = mean.get(f"CML-{s}"), mean.get(f"DPCML-{s}")
        if cml is None or dp is None:
            continue
        gain = dp["minority_R@20"] - cml["minority_R@20"]
        ratio = dp["minority_R@20"] / cml["minority_R@20"] if cml["minority_R@20"] else math.inf
        drop = cml["R@10_standard"] - dp["R@10_standard"]
        checks[f"minority_{s}"] = {
            "rule": "DPCML minority R@20 >= CML + 0.05 and >= 1.25x; overall R@10 drop <= 0.01",
            "gain": gain, "ratio": ratio, "r10_drop": drop,
            "met": bool(gain >= 0.05 and ratio >= 1.25 and drop <= 0.01),
        }  # fmt: skip
    if "DPCML-hard" in mean:
        sep = mean["DPCML-hard"]["separation"]
        checks["mechanism"] = {"rule": "g2 and g1 closest vectors differ for >= 60% of users",
                               "value": sep, "met": bool(sep >= 0.6)}  # fmt: skip
        div = mean["DPCML-hard"]["median_diversity"]
        lo, hi = PROTOCOL["delta1"], PROTOCOL["delta2"] + 0.05
        check = {"rule": f"median diversity with eta=10 in [{lo}, {hi}]; larger with eta=0",
                 "eta10": div, "met": bool(lo <= div <= hi)}  # fmt: skip
        if "DPCML-hard-eta0" in mean:
            check["eta0"] = mean["DPCML-hard-eta0"]["median_diversity"]
            check["met"] = bool(check["met"] and check["eta0"] > div)
        checks["dcrs"] = check
    return checks


def make_demo_data(seed: int = 0):
    """The fixed synthetic set and its official-style split (split seed 1234)."""
    data = make_multi_interest(seed)
    return data, split_per_user(data.matrix, seed=1234)


def plot_arms(out_dir, mean: dict[str, dict[str, float]]) -> list:
    """Bar charts (mean ± std over seeds, per arm) of minority recall@20 and overall R@10."""
    from pathlib import Path

    from labcore.plot import bar_plot

    out = Path(out_dir)
    paths = []
    charts = (("minority_R@20", "minority-interest recall@20", "minority_recall"),
              ("R@10_standard", "overall recall@10 (standard)", "recall10"))  # fmt: skip
    for key, label, name in charts:
        values = {arm: (m[key], m[f"{key}_std"]) for arm, m in mean.items()}
        paths.append(bar_plot(out / f"dpcml_demo_{name}.png", values, ylabel=label,
                              title=f"dpcml demo: {label}, mean ± std over seeds"))  # fmt: skip
    return paths
