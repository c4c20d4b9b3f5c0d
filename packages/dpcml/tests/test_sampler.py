"""Negative sampling: rejection of positives, uniformity, triplet expansion, hard candidates."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dpcml import DPCML, DPCMLConfig, TripletSampler, sample_negatives
from dpcml.sampler import naive_uniform_negatives, positive_pairs


def _train(seed=0, n_users=30, n_items=20):
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < 0.5
    dense[0] = True
    dense[0, 7] = False  # user 0 has exactly one negative: item 7
    return sp.csr_matrix(dense.astype(np.float32)), dense


def test_negatives_are_never_positives():
    m, dense = _train()
    users = np.repeat(np.arange(30), 50)
    neg = sample_negatives(m, users, 10, np.random.default_rng(1))
    assert neg.shape == (1500, 10)
    assert not dense[users[:, None], neg].any()
    assert (neg[users == 0] == 7).all()


def test_negatives_are_uniform_over_non_positives():
    m, dense = _train(1)
    u = 3
    neg = sample_negatives(m, np.full(20000, u), 5, np.random.default_rng(2)).ravel()
    allowed = np.flatnonzero(~dense[u])
    counts = np.bincount(neg, minlength=20)[allowed]
    expected = len(neg) / len(allowed)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 3 * len(allowed)  # df = |allowed| - 1; far below a broken sampler's value
    assert counts.sum() == len(neg)


def test_user_without_negatives_is_an_error():
    dense = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="no negative"):
        sample_negatives(sp.csr_matrix(dense), np.array([0]), 3, np.random.default_rng(0))


def test_naive_loop_obeys_the_same_rule():
    m, dense = _train(2)
    users = np.arange(30)
    neg = naive_uniform_negatives(m, users, 4, seed=0)
    assert not dense[users[:, None], neg].any()


def test_uniform_mode_expands_each_pair_into_s_triplets():
    m, dense = _train(3)
    s = TripletSampler(m, num_negatives=4, mode="uniform", seed=0)
    users, pos, neg = s.epoch()
    pu, pi = positive_pairs(m)
    assert len(s) == len(users) == 4 * m.nnz
    np.testing.assert_array_equal(users, np.repeat(pu, 4))
    np.testing.assert_array_equal(pos, np.repeat(pi, 4))
    assert dense[users, pos].all() and not dense[users, neg].any()
    batches = list(s.batches(64))
    assert sum(len(b[0]) for b in batches) == len(s)
    assert max(len(b[0]) for b in batches) == 64
    # shuffled, and every triplet is still (u, v+, v−) with v+ positive and v− negative
    u_all = torch.cat([b[0] for b in batches]).numpy()
    p_all = torch.cat([b[1] for b in batches]).numpy()
    n_all = torch.cat([b[2] for b in batches]).numpy()
    assert dense[u_all, p_all].all() and not dense[u_all, n_all].any()
    assert not np.array_equal(u_all, np.sort(u_all))


def test_hard_mode_gives_s_candidates_per_pair_and_model_picks_closest():
    m, _ = _train(4)
    s = TripletSampler(m, num_negatives=6, mode="hard", seed=0)
    users, pos, neg = s.epoch()
    assert neg.shape == (m.nnz, 6) and len(s) == m.nnz
    torch.manual_seed(0)
    model = DPCML(30, 20, DPCMLConfig(dim=4, n_vectors=2, dcrs_weight=0.0))
    u, p, n = (torch.from_numpy(a[:50]) for a in (users, pos, neg))
    d = model.distances(u.repeat_interleave(6), n.reshape(-1)).view(50, 6)
    hardest = n[torch.arange(50), d.argmin(1)]
    torch.testing.assert_close(model(u, p, n), model(u, p, hardest))
    assert (d.min(1).values <= d.mean(1)).all()


def test_resampling_changes_negatives_but_is_seeded():
    m, _ = _train(5)
    a, b = TripletSampler(m, 3, seed=11), TripletSampler(m, 3, seed=11)
    first, again = a.epoch()[2], b.epoch()[2]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, a.epoch()[2])
