"""kNN against scikit-learn; CRT lists against the official pool-and-filter rule, by hand."""

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from rcpmod.neighbors import crt_impute, knn_search, neighbor_lists


def test_knn_search_matches_sklearn_in_blocks():
    rng = np.random.default_rng(0)
    x = rng.random((120, 5))
    cand = np.flatnonzero(rng.random(120) < 0.7)
    q = np.arange(120)
    got = knn_search(torch.from_numpy(x), 6, q, cand, block_elems=97)  # many small blocks
    nn = NearestNeighbors(n_neighbors=7, algorithm="brute").fit(x[cand])
    _, idx = nn.kneighbors(x)
    ref = []
    for i in range(120):
        row = [c for c in cand[idx[i]] if c != i][:6]
        ref.append(row)
    np.testing.assert_array_equal(got, np.array(ref))


def _official_lists(xa, xb, pa, pb, k, pool=40):
    """The official get_knn_indices by hand: pool-long lists within each view (self dropped);
    a sample missing view a takes its view-b list, drops samples missing a, keeps k."""
    lists = []
    for xv, xu, pv, pu in ((xa, xb, pa, pb), (xb, xa, pb, pa)):
        have_v, have_u = np.flatnonzero(pv), np.flatnonzero(pu)
        full_v = {}
        for i in have_v:
            d = ((xv[have_v] - xv[i]) ** 2).sum(1)
            full_v[i] = [j for j in have_v[np.argsort(d, kind="stable")] if j != i][: pool - 1]
        full_u = {}
        for i in have_u:
            d = ((xu[have_u] - xu[i]) ** 2).sum(1)
            full_u[i] = [j for j in have_u[np.argsort(d, kind="stable")] if j != i][: pool - 1]
        out = np.full((len(pv), k), -1)
        for i in range(len(pv)):
            if pv[i]:
                out[i] = full_v[i][:k]
            else:
                kept = [j for j in full_u[i] if pv[j]]
                assert len(kept) >= k  # the official code fails otherwise
                out[i] = kept[:k]
        lists.append(out)
    return lists


def test_crt_lists_equal_official_pool_filter():
    rng = np.random.default_rng(1)
    n = 150
    xa, xb = rng.random((n, 4)), rng.random((n, 3))
    miss = rng.random(n)
    pa, pb = miss > 0.15, miss < 0.85
    pa[~pa & ~pb] = True
    got_a, got_b = neighbor_lists(torch.from_numpy(xa), torch.from_numpy(xb), pa, pb, 6)
    ref_a, ref_b = _official_lists(xa, xb, pa, pb, 6)
    np.testing.assert_array_equal(got_a, ref_a)
    np.testing.assert_array_equal(got_b, ref_b)
    # lists of samples missing a only hold samples that have a
    assert pa[got_a].all() and pb[got_b].all()


def test_crt_goes_past_the_pool_when_too_few_survive():
    rng = np.random.default_rng(2)
    n = 60
    xa, xb = rng.random((n, 2)), rng.random((n, 2))
    pa = np.ones(n, bool)
    pa[:50] = False  # 50 of 60 miss view a: a 40-pool rarely keeps 6 that have a
    pb = np.ones(n, bool)
    la, _ = neighbor_lists(torch.from_numpy(xa), torch.from_numpy(xb), pa, pb, 6)
    for i in range(50):
        cand = np.flatnonzero(pa & pb)
        d = ((xb[cand] - xb[i]) ** 2).sum(1)
        np.testing.assert_array_equal(la[i], cand[np.argsort(d, kind="stable")[:6]])


def test_crt_impute_by_hand():
    z = torch.arange(12.0).view(4, 3)
    nbr = torch.arange(24.0).view(4, 2, 3)
    missing = torch.tensor([False, True, False, True])
    out = crt_impute(z, nbr, missing)
    torch.testing.assert_close(out[0], z[0])
    torch.testing.assert_close(out[1], (nbr[1, 0] + nbr[1, 1]) / 2)
    torch.testing.assert_close(out[3], nbr[3].mean(0))
