"""Baselines on the same protocol: single-view detectors on the concatenated views (missing
views zero-filled, as in the official arrays) and a simple multi-view kNN-Jaccard detector.

Built in (scikit-learn / numpy, no PyOD needed), with PyOD's defaults:

* ``KNN``: distance to the 5th nearest neighbour (PyOD ``KNN(method="largest")``);
* ``LOF``: ``−negative_outlier_factor_`` of ``LocalOutlierFactor(n_neighbors=20)``;
* ``IForest``: ``−score_samples`` of ``IsolationForest(n_estimators=100)``;
* ``ECOD``: Li et al. 2022 — per-feature empirical left/right tail probabilities, summed −log,
  the skewness-chosen tail, the maximum of the three sums;
* ``kNN-Jaccard``: 1 − mean over view pairs of the Jaccard overlap of the samples' k-NN sets in
  each view (k = 10, pairs where both views are present), plus the min-max'd KNN score.

``backend="pyod"`` uses PyOD's own IForest/KNN/LOF/ECOD (``pip install rcpmod[baselines]``).
"""

from __future__ import annotations

import itertools

import numpy as np

from rcpmod.score import minmax

__all__ = ["BASELINES", "baseline_scores", "ecod_score", "knn_jaccard_score", "knn_score"]

BASELINES = ("IForest", "KNN", "LOF", "ECOD", "kNN-Jaccard")


def knn_score(x: np.ndarray, k: int = 5) -> np.ndarray:
    """Distance to the k-th nearest other sample."""
    from sklearn.neighbors import NearestNeighbors

    d, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return d[:, -1]


def ecod_score(x: np.ndarray) -> np.ndarray:
    """ECOD outlier score (higher = more abnormal)."""
    from scipy.stats import rankdata, skew

    n = len(x)
    left = rankdata(x, axis=0, method="max") / n  # P(X <= x)
    right = rankdata(-x, axis=0, method="max") / n  # P(X >= x)
    u_l, u_r = -np.log(left), -np.log(right)
    sk = np.nan_to_num(skew(x, axis=0))
    u_s = np.where(sk[None, :] < 0, u_l, u_r)
    return np.maximum(np.maximum(u_l.sum(1), u_r.sum(1)), u_s.sum(1))


def _neighbor_sets(x: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x[rows]).kneighbors(x[rows])
    return rows[idx[:, 1:]]


def knn_jaccard_score(views, mask, k: int = 10, add_knn: bool = True) -> np.ndarray:
    """1 − mean Jaccard overlap of per-view kNN sets over the view pairs a sample has
    (samples with a single view get the mean); ``add_knn`` adds mm(KNN on the concatenation)."""
    n = len(mask)
    total, count = np.zeros(n), np.zeros(n)
    for a, b in itertools.combinations(range(len(views)), 2):
        rows = np.flatnonzero(mask[:, a] & mask[:, b])
        if len(rows) <= k + 1:
            continue
        na, nb = _neighbor_sets(views[a], rows, k), _neighbor_sets(views[b], rows, k)
        both = np.sort(np.concatenate([na, nb], 1), 1)  # each set has unique members, so a
        inter = (np.diff(both, axis=1) == 0).sum(1)  # repeated value is one shared neighbour
        jac = inter / (2 * k - inter)
        total[rows] += 1 - jac
        count[rows] += 1
    score = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    score = np.where(np.isnan(score), np.nanmean(score), score)
    if add_knn:
        score = minmax(score) + minmax(knn_score(np.concatenate(views, 1)))
    return score


def baseline_scores(views, mask, names=BASELINES, seed: int = 0, backend: str = "builtin") -> dict:
    """``{name: scores}`` for the chosen baselines on zero-filled concatenated views."""
    x = np.concatenate([v * mask[:, i, None] for i, v in enumerate(views)], 1)
    out = {}
    for name in names:
        if name == "kNN-Jaccard":
            out[name] = knn_jaccard_score(views, mask)
        elif backend == "pyod":
            out[name] = _pyod(name, x, seed)
        elif name == "KNN":
            out[name] = knn_score(x)
        elif name == "LOF":
            from sklearn.neighbors import LocalOutlierFactor

            lof = LocalOutlierFactor(n_neighbors=20).fit(x)
            out[name] = -lof.negative_outlier_factor_
        elif name == "IForest":
            from sklearn.ensemble import IsolationForest

            out[name] = (
                -IsolationForest(n_estimators=100, random_state=seed).fit(x).score_samples(x)
            )
        elif name == "ECOD":
            out[name] = ecod_score(x)
        else:
            raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")
    return out


def _pyod(name: str, x: np.ndarray, seed: int) -> np.ndarray:
    try:
        from pyod.models.ecod import ECOD
        from pyod.models.iforest import IForest
        from pyod.models.knn import KNN
        from pyod.models.lof import LOF
    except ImportError:
        raise ValueError("backend='pyod' needs PyOD: pip install 'rcpmod[baselines]'") from None
    model = {"IForest": lambda: IForest(random_state=seed), "KNN": KNN, "LOF": LOF,
             "ECOD": ECOD}[name]()  # fmt: skip
    return model.fit(x).decision_scores_
