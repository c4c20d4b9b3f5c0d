"""A seeded synthetic multi-interest data set (offline default for ``dpcml demo``).

Items fall into G categories of imbalanced size; every user has a majority interest g1 (drawn
∝ category size) and a minority interest g2 ≠ g1 (uniform over the others), and n_u ~ U[20, 60]
positives: round(0.75 n_u) from g1, the rest from g2. Inside a category items are drawn without
replacement with Zipf popularity p_i ∝ 1 / rank_i^a (Gumbel top-k, vectorised). Item latent
vectors (category centre on S^{D−1} + noise) are returned as ground-truth geometry for
diagnostics; the interactions depend only on categories and popularity.

Minority recall@N = |top-N ∩ test_u ∩ cat(g2)| / |test_u ∩ cat(g2)| over users with at least one
such test item (majority recall@N likewise with g1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["MultiInterestData", "interest_recall", "make_multi_interest"]


@dataclass
class MultiInterestData:
    """The interaction matrix and its ground truth."""

    matrix: sp.csr_matrix  # (U, I) binary
    item_category: np.ndarray  # (I,)
    user_major: np.ndarray  # (U,) g1
    user_minor: np.ndarray  # (U,) g2
    item_latent: np.ndarray  # (I, D)


def make_multi_interest(
    seed: int = 0,
    num_users: int = 1500,
    category_sizes=(480, 300, 180, 120, 72, 48),
    n_range=(20, 60),
    minority_share: float = 0.25,
    zipf_exponent: float = 1.0,
    latent_dim: int = 16,
    noise: float = 0.3,
) -> MultiInterestData:
    """Generate the data set (spec C2 defaults: 1,500 users, 1,200 items in 6 categories)."""
    rng = np.random.default_rng(seed)
    sizes = np.asarray(category_sizes, dtype=np.int64)
    n_cat, n_items = len(sizes), int(sizes.sum())
    if n_cat < 2:
        raise ValueError("need at least two categories")
    cat = np.repeat(np.arange(n_cat), sizes)
    rank = np.arange(n_items) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1  # rank in category
    log_pop = -zipf_exponent * np.log(rank)

    major = rng.choice(n_cat, size=num_users, p=sizes / sizes.sum())
    minor = (major + rng.integers(1, n_cat, size=num_users)) % n_cat  # uniform over the rest
    n_u = rng.integers(n_range[0], n_range[1] + 1, size=num_users)
    n_minor = n_u - np.round((1 - minority_share) * n_u).astype(np.int64)
    n_major = n_u - n_minor
    if (n_major > sizes[major]).any() or (n_minor > sizes[minor]).any():
        raise ValueError("a category is smaller than the positives drawn from it")

    def draw(groups: np.ndarray, n: np.ndarray) -> np.ndarray:
        """(U, I) bool: n[u] items of category groups[u], Gumbel top-k on log popularity."""
        keys = log_pop + rng.gumbel(size=(num_users, n_items))
        keys[cat[None, :] != groups[:, None]] = -np.inf
        order = np.argsort(-keys, axis=1)
        chosen = np.zeros((num_users, n_items), dtype=bool)
        take = np.arange(n_items)[None, :] < n[:, None]
        np.put_along_axis(chosen, order, take, axis=1)
        return chosen

    liked = draw(major, n_major) | draw(minor, n_minor)
    centres = rng.standard_normal((n_cat, latent_dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    latent = centres[cat] + noise * rng.standard_normal((n_items, latent_dim)) / np.sqrt(latent_dim)
    return MultiInterestData(sp.csr_matrix(liked.astype(np.float32)), cat, major, minor, latent)


def interest_recall(
    top: np.ndarray,
    test: sp.csr_matrix,
    item_category: np.ndarray,
    user_category: np.ndarray,
    users=None,
) -> tuple[float, int]:
    """Mean over users of |top-N ∩ test_u ∩ cat(c_u)| / |test_u ∩ cat(c_u)|, and #users counted.

    ``top`` (n, N) recommended items of ``users`` (default all); ``user_category`` (U,) the
    category c_u of interest per user (g2 for minority recall).
    """
    test = sp.csr_matrix(test)
    users = np.arange(test.shape[0]) if users is None else np.asarray(users)
    sub = test[users]
    rows = np.repeat(np.arange(len(users)), np.diff(sub.indptr))
    relevant = item_category[sub.indices] == user_category[users][rows]
    n_rel = np.bincount(rows[relevant], minlength=len(users))
    keys = rows[relevant] * test.shape[1] + sub.indices[relevant]  # sorted
    cand = (np.arange(len(users))[:, None] * test.shape[1] + top).ravel()
    at = np.minimum(np.searchsorted(keys, cand), max(len(keys) - 1, 0))
    hit = keys[at] == cand if len(keys) else np.zeros(cand.shape, bool)
    found = hit.reshape(top.shape).sum(1)
    keep = n_rel > 0
    if not keep.any():
        return float("nan"), 0
    return float((found[keep] / n_rel[keep]).mean()), int(keep.sum())
