"""Scaling of the score, the neighbour search and the fit with n, each beside the official way
of computing it, plus AUC against baselines on the seeded synthetic set.

* **score**: the blockwise consistency score vs the official ``contrastive_score`` (the whole
  2n × 2n similarity matrix, its mask and logits), time and peak live-tensor bytes
  (``labcore.memory``, method ``tensors``) for growing n; the dense one only up to the n whose
  matrices fit comfortably;
* **neighbours/CRT**: our blockwise search vs a port of the official ``get_knn_indices`` loop
  structure (scikit-learn ``NearestNeighbors`` on each view, then Python loops that re-index
  and filter every missing sample's list with ``val not in missing``);
* **fit**: seconds per epoch of one view pair for growing n (width 256 preset);
* **AUC**: RCPMOD vs the built-in baselines on ``synthetic`` (one protocol run).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from labcore.memory import peak_memory
from rcpmod.baselines import BASELINES
from rcpmod.data import make_synthetic
from rcpmod.detector import RCPMOD
from rcpmod.mask import make_missing_mask
from rcpmod.neighbors import neighbor_lists
from rcpmod.protocol import run_once
from rcpmod.score import consistency_score, consistency_score_dense

__all__ = ["official_style_lists", "run_bench"]


def _unit(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = a + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return F.normalize(a, dim=1), F.normalize(b, dim=1)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def official_style_lists(xa: np.ndarray, xb: np.ndarray, pa, pb, k: int, pool: int = 40):
    """The official loop structure (a port for timing, same lists as ours)."""
    from sklearn.neighbors import NearestNeighbors

    out = []
    ms = {0: np.flatnonzero(~pa), 1: np.flatnonzero(~pb)}
    full = []
    for x, p in ((xa, pa), (xb, pb)):
        have = np.flatnonzero(p)
        _, idx = NearestNeighbors(n_neighbors=pool).fit(x[have]).kneighbors(x[have])
        idx = idx[:, 1:]
        mapped = np.full(idx.shape, -1)
        for i in range(idx.shape[0]):  # the official element-wise re-indexing
            for j in range(idx.shape[1]):
                mapped[i, j] = have[idx[i, j]]
        f = np.full((len(p), idx.shape[1]), -1)
        for r, orig in enumerate(have):
            f[orig] = mapped[r]
        full.append(f)
    for v, (f_own, f_other) in enumerate(((full[0], full[1]), (full[1], full[0]))):
        res = np.full((len(pa), k), -1)
        for i in ms[v]:
            kept = np.array([val for val in f_other[i] if val not in ms[v]])[:k]
            res[i, : len(kept)] = kept
        have = np.setdiff1d(np.arange(len(pa)), ms[v])
        res[have] = f_own[have, :k]
        out.append(res)
    return out


def run_bench(quick: bool = False, seed: int = 0, progress=None) -> dict:
    """All measurements (``quick``: smaller n everywhere, for CI)."""
    say = progress or (lambda msg: None)
    out: dict = {}
    # --- score scaling ---------------------------------------------------------------------
    sizes = [500, 1000, 2000, 4000] if quick else [1000, 3000, 10_000, 30_000, 100_000]
    dense_max = 2000 if quick else 4000
    blockwise = lambda ha, hb: consistency_score(ha, hb, 0.5, 256, 2048)  # noqa: E731
    rows = []
    for n in sizes:
        ha, hb = _unit(n, 64, seed)
        secs = _timed(lambda ha=ha, hb=hb: blockwise(ha, hb))
        mem = peak_memory(lambda ha=ha, hb=hb: blockwise(ha, hb), method="tensors")
        row = {"n": n, "blockwise_seconds": secs, "blockwise_peak_bytes": mem.peak_bytes}
        if n <= dense_max:
            row["dense_seconds"] = _timed(lambda ha=ha, hb=hb: consistency_score_dense(ha, hb))
            dmem = peak_memory(lambda ha=ha, hb=hb: consistency_score_dense(ha, hb),
                               method="tensors")  # fmt: skip
            row["dense_peak_bytes"] = dmem.peak_bytes
            diff = (blockwise(ha, hb) - consistency_score_dense(ha, hb)).abs().max()
            row["max_abs_difference"] = float(diff)
        rows.append(row)
        say(f"score n={n}: {secs:.2f} s, {mem.peak_bytes / 2**20:.1f} MiB")
    ns = np.array([r["n"] for r in rows], float)
    mem_b = np.array([r["blockwise_peak_bytes"] for r in rows], float)
    out["score"] = {
        "rows": rows,
        "blockwise_memory_loglog_slope": float(np.polyfit(np.log(ns), np.log(mem_b), 1)[0]),
        "blockwise_time_loglog_slope": float(np.polyfit(
            np.log(ns[1:]), np.log([r["blockwise_seconds"] for r in rows[1:]]), 1)[0]),
    }  # fmt: skip
    # --- neighbour lists / CRT ---------------------------------------------------------------
    n_knn = 2000 if quick else 6000
    d = make_synthetic(n=n_knn, seed=seed)
    mask = make_missing_mask(n_knn, 2, 0.3, seed)
    xa = torch.from_numpy(d.views[0])
    xb = torch.from_numpy(d.views[1])
    ours = _timed(lambda: neighbor_lists(xa, xb, mask[:, 0], mask[:, 1], 6))
    off = _timed(lambda: official_style_lists(d.views[0], d.views[1], mask[:, 0], mask[:, 1], 6))
    la, lb = neighbor_lists(xa, xb, mask[:, 0], mask[:, 1], 6)
    oa, ob = official_style_lists(d.views[0], d.views[1], mask[:, 0], mask[:, 1], 6)
    out["neighbors"] = {
        "n": n_knn,
        "ours_seconds": ours,
        "official_style_seconds": off,
        "speedup": off / ours,
        "same_lists_fraction": float(((la == oa).all(1) & (lb == ob).all(1)).mean()),
    }
    say(f"neighbour lists n={n_knn}: ours {ours:.2f} s, official loops {off:.2f} s")
    # --- fit time per epoch ------------------------------------------------------------------
    fit_sizes = [300, 1000] if quick else [1000, 3000, 10_000]
    fit_rows = []
    for n in fit_sizes:
        d = make_synthetic(n=n, seed=seed)
        mask = make_missing_mask(n, 2, 0.3, seed)
        det = RCPMOD(epochs=2, random_state=seed)
        secs = _timed(lambda d=d, mask=mask, det=det: det.fit(d.views, mask))
        fit_rows.append({"n": n, "seconds_per_epoch": secs / 2})
        say(f"fit n={n}: {secs / 2:.2f} s per epoch")
    out["fit"] = {"rows": fit_rows}
    # --- AUC on the synthetic set ------------------------------------------------------------
    n_auc = 500 if quick else 2000
    det_kw = {"epochs": 30, "hidden": (64, 64)} if quick else {}
    data = make_synthetic(n=n_auc, seed=seed)
    r = run_once(data, (0.05, 0.02, 0.08), 0.3, seed + 1, det_kw, BASELINES, components=True)
    out["auc"] = {"n": n_auc, "detector": det_kw or "cpu256 preset",
                  **{k: v for k, v in r.items() if not k.startswith("_")}}  # fmt: skip
    say(f"AUC synthetic n={n_auc}: RCPMOD {r['RCPMOD']['total']:.3f}, KNN {r['KNN']['total']:.3f}")
    return out
