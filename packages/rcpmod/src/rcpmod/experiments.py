"""Grids of protocol runs, their summary (mean ± std over runs) and the B6 acceptance checks.

Acceptance thresholds (spec B6, fixed before any run; a miss is reported, never retuned):

* R2 breast_cancer: total AUC ≥ 0.96 and ≥ KNN + 0.01; class-outlier AUC ≥ 0.97.
* R3 digits (2 views): total AUC ≥ 0.96 and ≥ best PyOD-style detector − 0.01; class AUC ≥ KNN
  class AUC + 0.01.
* R4 components (on every dataset run): class AUC(s_con) ≥ 0.95; attribute AUC(s_att) ≥ 0.95;
  class AUC(s_att) ≤ 0.7; fused total ≥ both parts' totals.
* R5 missing views: total AUC at mr 0.5 ≥ total at mr 0 − 0.05; CRT − zero-imputation ≥ 0.
* R6 determinism: the same seed gives identical scores; runtime < 60 s per dataset-seed.
"""

from __future__ import annotations

import numpy as np

from labcore import dist
from rcpmod.data import MultiViewData
from rcpmod.inject import OUTLIER_TYPES
from rcpmod.protocol import RATE_PERMUTATIONS, run_once

__all__ = ["COLUMNS", "PYOD_NAMES", "acceptance", "run_grid", "summarise"]

COLUMNS = ("total", *OUTLIER_TYPES)
PYOD_NAMES = ("IForest", "KNN", "LOF", "ECOD")


def run_grid(
    data: MultiViewData,
    seeds,
    perms=RATE_PERMUTATIONS,
    missing_rate: float = 0.3,
    detector: dict | None = None,
    baselines=(),
    backend: str = "builtin",
    components: bool = True,
    progress=None,
    distributed: bool = False,
) -> list[dict]:
    """Every (rate permutation, seed) run. ``distributed``: runs are dealt to ranks
    (``rank, rank + world, …``) and the finished records gathered on every rank, in grid order."""
    jobs = [(tuple(r), s) for r in perms for s in seeds]
    mine = dist.shard(len(jobs)).tolist() if distributed else list(range(len(jobs)))
    it = progress(mine, desc=data.name) if progress is not None else mine
    local = {}
    for j in it:
        rates, seed = jobs[j]
        local[j] = run_once(data, rates, missing_rate, seed, detector, baselines, backend,
                            components)  # fmt: skip
    if not distributed or dist.world_size() == 1:
        return [local[j] for j in range(len(jobs))]
    return _gather_runs(local, len(jobs))


def _gather_runs(local: dict, n_jobs: int) -> list[dict]:
    """Gather run records across ranks through a byte tensor (all_gather_cat, ragged)."""
    import pickle

    import torch

    payload = pickle.dumps(local)
    t = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    lengths = dist.all_gather_cat(torch.tensor([t.numel()]))
    blob = dist.all_gather_cat(t).numpy().tobytes()
    merged: dict = {}
    start = 0
    for length in lengths.tolist():
        merged.update(pickle.loads(blob[start : start + length]))
        start += length
    return [merged[j] for j in range(n_jobs)]


def _methods(runs) -> list[str]:
    return [k for k in runs[0] if isinstance(runs[0][k], dict) and "total" in runs[0][k]]


def summarise(runs: list[dict]) -> dict:
    """``{method: {column: {"mean", "std", "n"}}}`` over the runs (NaN columns skipped)."""
    out: dict = {}
    for m in _methods(runs):
        out[m] = {}
        for c in COLUMNS:
            vals = np.array([r[m][c] for r in runs], dtype=float)
            vals = vals[~np.isnan(vals)]
            out[m][c] = {"mean": float(vals.mean()) if len(vals) else float("nan"),
                         "std": float(vals.std()) if len(vals) else float("nan"),
                         "n": len(vals)}  # fmt: skip
    return out


def _m(summary, method, col="total") -> float:
    return summary[method][col]["mean"]


def acceptance(summaries: dict[str, dict], extra: dict) -> dict[str, dict]:
    """The B6 checks that the given summaries allow (``{dataset: summary}``) plus ``extra``
    (R5 / R6 measurements), each with its rule, numbers and ``met``."""
    checks: dict[str, dict] = {}
    if "breast_cancer" in summaries:
        s = summaries["breast_cancer"]
        r, knn = _m(s, "RCPMOD"), _m(s, "KNN")
        rc = _m(s, "RCPMOD", "class")
        checks["R2 breast_cancer"] = {
            "rule": "total >= 0.96 and >= KNN + 0.01; class >= 0.97",
            "total": r, "KNN_total": knn, "class": rc, "KNN_class": _m(s, "KNN", "class"),
            "met": bool(r >= 0.96 and r >= knn + 0.01 and rc >= 0.97),
        }  # fmt: skip
    if "digits" in summaries:
        s = summaries["digits"]
        r = _m(s, "RCPMOD")
        best = max(_m(s, k) for k in PYOD_NAMES if k in s)
        rc, kc = _m(s, "RCPMOD", "class"), _m(s, "KNN", "class")
        checks["R3 digits"] = {
            "rule": "total >= 0.96 and >= best PyOD-style - 0.01; class >= KNN class + 0.01",
            "total": r, "best_single_view_total": best, "class": rc, "KNN_class": kc,
            "met": bool(r >= 0.96 and r >= best - 0.01 and rc >= kc + 0.01),
        }  # fmt: skip
    for name, s in summaries.items():
        if "s_con" not in s:
            continue
        con_c, att_a = _m(s, "s_con", "class"), _m(s, "s_att", "attribute")
        att_c = _m(s, "s_att", "class")
        fused, con_t, att_t = _m(s, "RCPMOD"), _m(s, "s_con"), _m(s, "s_att")
        checks[f"R4 components {name}"] = {
            "rule": "class(s_con) >= 0.95; attribute(s_att) >= 0.95; class(s_att) <= 0.7; "
                    "fused total >= both parts",
            "class_s_con": con_c, "attribute_s_att": att_a, "class_s_att": att_c,
            "total_fused": fused, "total_s_con": con_t, "total_s_att": att_t,
            "met": bool(con_c >= 0.95 and att_a >= 0.95 and att_c <= 0.7
                        and fused >= con_t and fused >= att_t),
        }  # fmt: skip
    if "mr" in extra:
        e = extra["mr"]
        checks[f"R5 missing views {e['dataset']}"] = {
            "rule": "total(mr=0.5) >= total(mr=0) - 0.05; CRT - zero-imputation >= 0",
            **{k: v for k, v in e.items() if k != "dataset"},
            "met": bool(e["total_mr0.5"] >= e["total_mr0"] - 0.05 and e["crt_minus_zero"] >= 0),
        }
    if "determinism" in extra:
        e = extra["determinism"]
        checks["R6 determinism and runtime"] = {
            "rule": "same seed -> identical scores; < 60 s per dataset-seed (width 256)",
            **e, "met": bool(e["identical"] and e["max_fit_seconds"] < 60),
        }  # fmt: skip
    return checks
