"""R1: the injection protocol's counts, swaps, disjointness and the missing-view mask."""

import itertools

import numpy as np
import pytest

from rcpmod.inject import inject_outliers, minmax_global
from rcpmod.mask import make_missing_mask
from rcpmod.protocol import RATE_PERMUTATIONS, make_run_data


def _data(n=400, dims=(5, 7, 4), seed=0):
    rng = np.random.default_rng(seed)
    views = [minmax_global(rng.random((n, d))) for d in dims]
    for v in views:  # min 0 and max 1 in every view, so re-scaling keeps values unchanged
        v[0], v[1] = 0.0, 1.0
    return views, rng.integers(0, 4, n)


@pytest.mark.parametrize("n_views", [2, 3])
@pytest.mark.parametrize("rates", RATE_PERMUTATIONS)
def test_counts_disjoint_and_swaps(n_views, rates):
    views, y = _data(dims=(5, 7, 4)[:n_views])
    n = len(y)
    mask = make_missing_mask(n, n_views, 0.3, 3)
    inj = inject_outliers(views, y, rates, seed=4, mask=mask)
    c, a, ca = (inj.indices[k] for k in ("class", "attribute", "class_attribute"))
    assert len(c) == 2 * (int(rates[0] * n) // 2)
    assert len(a) == int(rates[1] * n)
    assert len(ca) == 2 * (int(rates[2] * n) // 2)
    for s, t in itertools.combinations((c, a, ca), 2):
        assert not set(s) & set(t)
    assert inj.is_outlier.sum() == len(c) + len(a) + len(ca)
    assert inj.mask.any(1).all()
    half = n_views // 2
    for name in ("class", "class_attribute"):
        for i, j, swap in inj.swapped_views[name]:
            assert y[i] != y[j] and len(swap) == half
            assert all(mask[i, v] and mask[j, v] for v in swap)
            assert mask[i].sum() >= 2 and mask[j].sum() >= 2
    for i, j, swap in inj.swapped_views["class"]:
        for v in range(n_views):
            if v in swap:
                np.testing.assert_array_equal(inj.views[v][i], views[v][j] * mask[i, v])
            else:
                np.testing.assert_array_equal(inj.views[v][i], views[v][i] * mask[i, v])
    for v in range(n_views):  # every view of an attribute outlier is noise; missing ones zeroed
        assert not np.allclose(inj.views[v][a][mask[a, v]], views[v][a][mask[a, v]])
        assert (inj.views[v][~mask[:, v]] == 0).all()
        assert inj.views[v].min() >= 0 and inj.views[v].max() <= 1


def test_class_attribute_noise_on_the_other_views():
    views, y = _data(dims=(5, 7, 4))
    inj = inject_outliers(views, y, (0.0, 0.0, 0.1), seed=5)
    for i, j, swap in inj.swapped_views["class_attribute"]:
        rest = set(range(3)) - set(swap)
        assert len(swap) == 1 and len(rest) == 2
        for v in rest:
            assert not np.allclose(inj.views[v][i], views[v][i])
        np.testing.assert_array_equal(inj.views[swap[0]][i], views[swap[0]][j])


def test_missing_fraction_for_two_views():
    fr = [(~make_missing_mask(2000, 2, 0.3, s)).any(1).mean() for s in range(5)]
    assert all(abs(f - 0.30) <= 0.01 for f in fr)
    m = make_missing_mask(1000, 3, 0.5, 0)
    assert m.any(1).all() and abs(m.mean() - (1 - 0.5 / 3)) < 0.005
    assert make_missing_mask(50, 2, 0.0, 0).all()


def test_protocol_run_data_is_seeded_and_no_outlier_lacks_all_views():
    views, y = _data(dims=(5, 7))
    from rcpmod.data import MultiViewData

    d = MultiViewData(views, y, "t")
    a, b = (
        make_run_data(d, (0.05, 0.02, 0.08), 0.3, 1),
        make_run_data(d, (0.05, 0.02, 0.08), 0.3, 1),
    )
    np.testing.assert_array_equal(a.views[0], b.views[0])
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.mask[a.is_outlier == 1].any(1).all()


def test_bad_rates_and_impossible_pairs():
    views, y = _data(dims=(5, 7))
    with pytest.raises(ValueError, match="rates"):
        inject_outliers(views, y, (0.5, 0.5), seed=0)
    with pytest.raises(ValueError, match="pairs"):
        inject_outliers(views, np.zeros(len(y)), (0.1, 0.0, 0.0), seed=0)  # one class only
