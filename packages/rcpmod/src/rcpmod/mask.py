"""Partial-view masks: the CPM-Nets ``get_mask`` procedure the official code uses.

For ``V`` views and missing rate ``mr`` each entry is missing with probability about ``mr / V``
(so a sample misses ``mr`` views on average), every sample keeps at least one view (a one-hot
"preserved" view is drawn first), and draws are repeated until the fraction of present entries
is within 0.005 of ``1 − mr / V``. For ``V = 2`` and ``mr = 0.3``, 30 % of the samples are
incomplete (each missing exactly one view).
"""

from __future__ import annotations

import numpy as np

__all__ = ["make_missing_mask"]


def make_missing_mask(
    n: int, n_views: int, rate: float, seed: int | np.random.Generator = 0, max_tries: int = 10_000
) -> np.ndarray:
    """A boolean ``(n, n_views)`` mask, ``True`` = view present (official ``get_mask``).

    ``rate`` is the official ``missing_rate`` in [0, 1]; ``rate = 0`` gives all views present.
    """
    if n < 1 or n_views < 1:
        raise ValueError(f"need n >= 1 and n_views >= 1, got n={n}, n_views={n_views}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"missing rate must be in [0, 1], got {rate}")
    rng = np.random.default_rng(seed)
    one_rate = 1.0 - rate / n_views

    def preserved() -> np.ndarray:
        keep = np.zeros((n, n_views), dtype=bool)
        keep[np.arange(n), rng.integers(0, n_views, n)] = True
        return keep

    if one_rate <= 1.0 / n_views:
        return preserved()
    if one_rate == 1.0:
        return np.ones((n, n_views), dtype=bool)
    for _ in range(max_tries):
        keep = preserved()
        one_num = n_views * n * one_rate - n  # present entries to add beyond the preserved one
        ratio = one_num / (n_views * n)
        first = rng.integers(0, 100, (n, n_views)) < int(ratio * 100)
        overlap = int(np.sum(first & keep))
        ratio = one_num / (1 - overlap / one_num) / (n_views * n)
        matrix = keep | (rng.integers(0, 100, (n, n_views)) < int(ratio * 100))
        if abs(one_rate - matrix.mean()) < 0.005:
            return matrix
    raise ValueError(
        f"no mask within 0.005 of the target after {max_tries} draws (n={n}, rate={rate}); "
        "n is probably too small for this rate"
    )
