"""The outlier-injection protocol of the official code (after LDSR / kailigo's mvod).

Three outlier types, injected in this order on global-min-max-scaled views with the mask drawn
first:

1. **class outliers**: disjoint pairs ``(i, j)`` with ``y_i != y_j``, each with >= 2 present views
   and >= ``floor(V/2)`` common present views; ``floor(V/2)`` randomly chosen *common* views are
   swapped between ``i`` and ``j``. ``floor(floor(rate·n)/2)`` pairs.
2. **attribute outliers**: ``floor(rate·n)`` samples drawn from the non-outliers; *all* their views
   are replaced by U[0, 1] noise.
3. then missing views are zeroed and every view is min-max scaled again (global min and max);
4. **class-attribute outliers**: pairs drawn from the remaining inliers as in 1; ``floor(V/2)``
   common views swapped, every other view of both set to U[0, 1];
5. zero the missing views and min-max again.

The official pair sampler lists all ``n(n−1)/2`` pairs and pops random ones; taking uniformly
random candidate pairs and accepting each valid one that is disjoint from those already taken
draws from the same distribution without the quadratic list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["OUTLIER_TYPES", "Injection", "inject_outliers", "minmax_global"]

OUTLIER_TYPES = ("class", "attribute", "class_attribute")


def minmax_global(x: np.ndarray) -> np.ndarray:
    """(x − min) / (max − min) over the whole matrix (the official ``minmaxNormal``)."""
    lo, hi = float(np.min(x)), float(np.max(x))
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


@dataclass
class Injection:
    """Views with outliers, the 0/1 outlier labels and the index set of each outlier type."""

    views: list[np.ndarray]
    mask: np.ndarray
    is_outlier: np.ndarray
    indices: dict[str, np.ndarray] = field(default_factory=dict)
    swapped_views: dict[str, list[tuple[int, int, tuple[int, ...]]]] = field(default_factory=dict)

    def type_labels(self) -> np.ndarray:
        """Per sample: ``""`` for inliers, else the outlier type name."""
        out = np.full(len(self.is_outlier), "", dtype=object)
        for name, idx in self.indices.items():
            out[idx] = name
        return out


def _pick_pairs(rng, y, mask, n_pairs, eligible, half) -> list[tuple[int, int]]:
    """Disjoint random pairs among ``eligible`` with different labels and enough common views."""
    if n_pairs == 0:
        return []
    cand = np.flatnonzero(eligible & (mask.sum(1) >= 2))
    if len(cand) < 2:
        raise ValueError(f"not enough samples with >= 2 present views for {n_pairs} pairs")
    used = np.zeros(len(y), dtype=bool)
    pairs: list[tuple[int, int]] = []
    tries = 0
    while len(pairs) < n_pairs:
        tries += 1
        if tries > 200:
            raise ValueError(f"could not find {n_pairs} disjoint valid pairs (found {len(pairs)})")
        m = max(64, 8 * (n_pairs - len(pairs)))
        i, j = cand[rng.integers(0, len(cand), m)], cand[rng.integers(0, len(cand), m)]
        ok = (i != j) & (y[i] != y[j]) & ((mask[i] & mask[j]).sum(1) >= half)
        for a, b in zip(i[ok].tolist(), j[ok].tolist()):  # sequential: disjointness
            if not used[a] and not used[b]:
                used[a] = used[b] = True
                pairs.append((a, b))
                if len(pairs) == n_pairs:
                    break
    return pairs


def _swap(
    rng, views, mask, pairs, half, noise_rest: bool
) -> list[tuple[int, int, tuple[int, ...]]]:
    record = []
    n_views = len(views)
    for a, b in pairs:
        common = np.flatnonzero(mask[a] & mask[b])
        swap = tuple(sorted(rng.choice(common, half, replace=False).tolist()))
        for v in swap:
            views[v][[a, b]] = views[v][[b, a]]
        if noise_rest:
            for v in set(range(n_views)) - set(swap):
                views[v][[a, b]] = rng.random((2, views[v].shape[1]))
        record.append((a, b, swap))
    return record


def _zero_and_rescale(views: list[np.ndarray], mask: np.ndarray) -> None:
    for v in range(len(views)):
        views[v] = minmax_global(views[v] * mask[:, v, None])


def inject_outliers(
    views: list[np.ndarray],
    labels: np.ndarray,
    rates: tuple[float, float, float],
    seed: int | np.random.Generator = 0,
    mask: np.ndarray | None = None,
) -> Injection:
    """Inject (class, attribute, class-attribute) outliers at ``rates`` (fractions of n).

    ``views`` are ``(n, d_v)`` arrays (copied, not modified), ``labels`` the class labels used
    to pick pairs, ``mask`` the ``(n, V)`` present-view mask (all present if ``None``). The
    returned views have missing views zeroed and are globally min-max scaled per view, as the
    official arrays are.
    """
    views = [np.array(v, dtype=np.float64, copy=True) for v in views]
    y = np.asarray(labels)
    n, n_views = len(y), len(views)
    if any(v.ndim != 2 or len(v) != n for v in views):
        raise ValueError("every view must be a 2-D array with one row per label")
    if len(rates) != 3 or any(not 0 <= r < 1 for r in rates):
        raise ValueError(f"rates must be three fractions in [0, 1), got {rates}")
    mask = np.ones((n, n_views), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != (n, n_views) or not mask.any(1).all():
        raise ValueError("mask must be (n, V) with at least one present view per sample")
    rng = np.random.default_rng(seed)
    half = n_views // 2
    c_rate, a_rate, ca_rate = rates
    is_out = np.zeros(n, dtype=bool)
    indices: dict[str, np.ndarray] = {}
    swapped: dict[str, list] = {}

    pairs = _pick_pairs(rng, y, mask, int(c_rate * n) // 2, ~is_out, half)
    swapped["class"] = _swap(rng, views, mask, pairs, half, noise_rest=False)
    indices["class"] = np.array(sorted(i for p in pairs for i in p), dtype=np.int64)
    is_out[indices["class"]] = True

    pool = np.flatnonzero(~is_out)
    n_attr = int(a_rate * n)
    if n_attr > len(pool):
        raise ValueError(f"{n_attr} attribute outliers asked for but only {len(pool)} inliers left")
    attr = np.sort(rng.choice(pool, n_attr, replace=False))
    for v in range(n_views):
        views[v][attr] = rng.random((n_attr, views[v].shape[1]))
    indices["attribute"] = attr.astype(np.int64)
    is_out[attr] = True
    _zero_and_rescale(views, mask)

    pairs = _pick_pairs(rng, y, mask, int(ca_rate * n) // 2, ~is_out, half)
    swapped["class_attribute"] = _swap(rng, views, mask, pairs, half, noise_rest=True)
    indices["class_attribute"] = np.array(sorted(i for p in pairs for i in p), dtype=np.int64)
    is_out[indices["class_attribute"]] = True
    if ca_rate > 0:  # official: re-scaled whenever the rate is non-zero
        _zero_and_rescale(views, mask)
    return Injection(views=views, mask=mask, is_outlier=is_out.astype(np.int64),
                     indices=indices, swapped_views=swapped)  # fmt: skip
