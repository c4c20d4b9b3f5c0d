"""One run of the official evaluation protocol and the AUC breakdown by outlier type.

A run with data seed ``s``: draw the missing-view mask, inject (class, attribute,
class-attribute) outliers at ``rates`` (one random stream, mask first, as ``run.py`` seeds
numpy once per data seed), fit the detector on the injected partial views, and report the AUC
on all samples and per outlier type (that type's outliers against all inliers).
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from labcore.metrics import roc_auc
from rcpmod.baselines import baseline_scores
from rcpmod.data import MultiViewData
from rcpmod.detector import RCPMOD
from rcpmod.inject import OUTLIER_TYPES, Injection, inject_outliers
from rcpmod.mask import make_missing_mask

__all__ = ["RATE_PERMUTATIONS", "auc_by_type", "make_run_data", "run_once"]

#: the six permutations of (0.02, 0.05, 0.08) as (class, attribute, class-attribute) rates
RATE_PERMUTATIONS = list(itertools.permutations((0.02, 0.05, 0.08)))


def auc_by_type(scores: np.ndarray, inj: Injection) -> dict[str, float]:
    """``total`` AUC and one per outlier type (its outliers vs all inliers)."""
    y = inj.is_outlier
    out = {"total": roc_auc(scores, y)}
    inl = y == 0
    for name in OUTLIER_TYPES:
        idx = inj.indices.get(name, np.zeros(0, int))
        if len(idx) == 0:
            out[name] = float("nan")
            continue
        sel = inl.copy()
        sel[idx] = True
        out[name] = roc_auc(scores[sel], y[sel])
    return out


def make_run_data(data: MultiViewData, rates, missing_rate: float, seed: int) -> Injection:
    """Mask then outliers from one random stream seeded by the data seed."""
    rng = np.random.default_rng(seed)
    mask = make_missing_mask(data.n, len(data.views), missing_rate, rng)
    return inject_outliers(data.views, data.labels, rates, rng, mask=mask)


def run_once(
    data: MultiViewData,
    rates,
    missing_rate: float,
    seed: int,
    detector: dict | None = None,
    baselines=(),
    backend: str = "builtin",
    components: bool = False,
) -> dict:
    """One protocol run: AUCs of RCPMOD (``detector`` = keyword arguments for :class:`RCPMOD`,
    ``None`` to skip it) and of ``baselines``; ``components`` adds s_con and s_att alone."""
    inj = make_run_data(data, rates, missing_rate, seed)
    out: dict = {"rates": list(rates), "missing_rate": missing_rate, "seed": seed,
                 "n_outliers": {k: len(v) for k, v in inj.indices.items()}}  # fmt: skip
    if detector is not None:
        t = time.perf_counter()
        det = RCPMOD(**{"random_state": seed, **detector}).fit(inj.views, inj.mask)
        out["fit_seconds"] = time.perf_counter() - t
        out["RCPMOD"] = auc_by_type(det.decision_scores_, inj)
        if components:
            out["s_con"] = auc_by_type(det.consistency_scores_, inj)
            out["s_att"] = auc_by_type(det.attribute_scores_, inj)
        out["_scores"] = det.decision_scores_
    for name, s in baseline_scores(inj.views, inj.mask, baselines, seed, backend).items():
        out[name] = auc_by_type(s, inj)
    out["_labels"] = inj.is_outlier
    out["_types"] = inj.type_labels()
    return out
