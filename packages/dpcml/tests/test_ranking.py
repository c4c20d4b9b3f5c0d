"""The vectorised full-ranking evaluator against a per-user loop and hand computations."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dpcml import evaluate_ranking, naive_evaluate, recommend
from dpcml.data import split_per_user
from labcore.metrics import roc_auc


def _fixture(seed, n_users=60, n_items=40, ties=False):
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < rng.uniform(0.05, 0.5, size=(n_users, 1))
    dense[:3] = False
    dense[0, :2] = True  # tiny users: skipped by the official rules
    dense[1, :6] = True
    dense[2, :] = True  # a user with every item
    sp_ = split_per_user(sp.csr_matrix(dense.astype(np.float32)), seed=seed, min_items=1)
    scores = rng.integers(0, 5, (n_users, n_items)) if ties else rng.standard_normal(
        (n_users, n_items))  # fmt: skip
    return sp_, torch.tensor(scores, dtype=torch.float64)


@pytest.mark.parametrize("convention", ["official", "standard"])
@pytest.mark.parametrize("seed,ties", [(0, False), (1, False), (2, True)])
def test_vectorised_equals_naive_reference(convention, seed, ties):
    sp_, scores = _fixture(seed, ties=ties)
    ks = (1, 3, 5, 10)
    fast = evaluate_ranking(scores, sp_.train, sp_.test, ks, convention, chunk_size=7)
    slow = naive_evaluate(scores, sp_.train, sp_.test, ks, convention, chunk_size=13)
    assert fast.keys() == slow.keys()
    for name in fast:
        if isinstance(fast[name], float) and math.isnan(fast[name]):
            assert math.isnan(slow[name]), name
        else:
            assert fast[name] == pytest.approx(slow[name], abs=1e-9), name


def test_skip_rules_of_the_two_conventions():
    sp_, scores = _fixture(3)
    n_test = np.diff(sp_.test.indptr)
    off = evaluate_ranking(scores, sp_.train, sp_.test, (5,), "official")
    std = evaluate_ranking(scores, sp_.train, sp_.test, (5,), "standard")
    assert off["n_users@5"] == (n_test >= 5).sum()
    assert off["n_users"] == (n_test >= 3).sum()
    assert std["n_users@5"] == std["n_users"] == (n_test >= 1).sum()


def test_hand_computed_user():
    # 1 user, 8 items; train = {0}; test = {2, 5, 6}; ranking of non-train items by score:
    # 2 (r=1), 1, 5 (r=3), 3, 4, 7, 6 (r=7)  -> L = 7, P = 3
    scores = torch.tensor([[9.0, 7.0, 8.0, 5.0, 4.0, 6.0, 1.0, 2.0]])
    train = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0, 0, 0]], np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 1, 0, 0, 1, 1, 0]], np.float32))
    m = evaluate_ranking(scores, train, test, ks=(3,), convention="official")
    assert m["P@3"] == pytest.approx(2 / 3)
    assert m["R@3"] == pytest.approx(2 / 3)
    idcg3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["NDCG@3"] == pytest.approx((1 + 1 / math.log2(4)) / idcg3)
    assert m["MAP"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 7) / 3)
    assert m["MRR"] == pytest.approx(1.0)
    dcg = 1 + 1 / math.log2(4) + 1 / math.log2(8)
    assert m["NDCG"] == pytest.approx(dcg / idcg3)
    assert m["AUC"] == pytest.approx(1 - ((1 - 1) + (3 - 2) + (7 - 3)) / (3 * 4))
    # the AUC is the ROC AUC of the test labels among the non-train items
    keep = np.arange(1, 8)
    auc = roc_auc(scores[0, keep].numpy(), test.toarray()[0, keep])
    assert m["AUC"] == pytest.approx(auc)


def test_auc_matches_roc_auc_per_user_without_ties():
    sp_, scores = _fixture(4)
    users = np.flatnonzero(np.diff(sp_.test.indptr) >= 3)
    want = []
    for u in users:
        keep = ~sp_.train[u].toarray()[0].astype(bool)
        labels = sp_.test[u].toarray()[0][keep]
        want.append(1.0 if labels.all() else roc_auc(scores[u].numpy()[keep], labels))
    got = evaluate_ranking(scores, sp_.train, sp_.test, (3,), "official")
    assert got["AUC"] == pytest.approx(np.mean(want), abs=1e-9)


def test_recommend_masks_train_items():
    sp_, scores = _fixture(5)
    top = recommend(scores, sp_.train, 5)
    assert top.shape == (60, 5)
    for u in range(3, 60):
        train_items = set(sp_.train[u].indices)
        order = [i for i in np.argsort(-scores[u].numpy(), kind="stable") if i not in train_items]
        assert top[u].tolist() == order[:5]


def test_bad_arguments():
    sp_, scores = _fixture(0)
    with pytest.raises(ValueError, match="convention"):
        evaluate_ranking(scores, sp_.train, sp_.test, convention="mine")
    with pytest.raises(ValueError, match="shapes"):
        evaluate_ranking(scores, sp_.train, sp_.test[:, :5])


def _with_minus_inf(scores, seed, share=0.3):
    """Scores where a share of every row (train, test and other items alike) is −inf."""
    rng = np.random.default_rng(seed)
    out = scores.clone()
    out[torch.from_numpy(rng.random(tuple(scores.shape)) < share)] = -math.inf
    return out


@pytest.mark.parametrize("convention", ["official", "standard"])
@pytest.mark.parametrize("seed", [0, 6])
def test_minus_inf_scores_rank_like_the_naive_reference(convention, seed):
    sp_, scores = _fixture(seed)
    scores = _with_minus_inf(scores, seed)
    ks = (1, 3, 5, 10)
    fast = evaluate_ranking(scores, sp_.train, sp_.test, ks, convention, chunk_size=9)
    slow = naive_evaluate(scores, sp_.train, sp_.test, ks, convention)
    for name in fast:
        if isinstance(fast[name], float) and math.isnan(fast[name]):
            assert math.isnan(slow[name]), name
        else:
            assert fast[name] == pytest.approx(slow[name], abs=1e-9), name


def test_minus_inf_candidate_keeps_its_rank():
    # 8 items; train {0, 3}; test {1, 2, 4}; items 2 and 4 score −inf. Non-train ranking by
    # score, ties by id: 1 (r=1), 5, 6, 7, 2 (r=5), 4 (r=6)  ->  L = 6, P = 3
    inf = math.inf
    scores = torch.tensor([[5.0, 4.0, -inf, 3.0, -inf, 2.0, 1.0, 0.5]], dtype=torch.float64)
    train = sp.csr_matrix(np.array([[1, 0, 0, 1, 0, 0, 0, 0]], np.float32))
    test = sp.csr_matrix(np.array([[0, 1, 1, 0, 1, 0, 0, 0]], np.float32))
    m = evaluate_ranking(scores, train, test, ks=(3,))
    assert m["MAP"] == pytest.approx((1 / 1 + 2 / 5 + 3 / 6) / 3)
    assert m["AUC"] == pytest.approx(1 - ((1 - 1) + (5 - 2) + (6 - 3)) / (3 * 3))
    assert recommend(scores, train, 6)[0].tolist() == [1, 5, 6, 7, 2, 4]


def test_recommend_never_returns_train_items_before_minus_inf_candidates():
    sp_, scores = _fixture(7)
    scores = _with_minus_inf(scores, 7, share=0.6)
    top = recommend(scores, sp_.train, 10)
    for u in range(3, 60):
        train_items = set(sp_.train[u].indices)
        order = [i for i in np.argsort(-scores[u].numpy(), kind="stable") if i not in train_items]
        assert top[u].tolist()[: len(order)] == order[:10]


def test_overlapping_splits_are_rejected():
    sp_, scores = _fixture(0)
    test = sp_.test.tolil()
    u = 5
    test[u, sp_.train[u].indices[0]] = 1.0  # one training item also in the test split
    for evaluate in (evaluate_ranking, naive_evaluate):
        with pytest.raises(ValueError, match=r"1 \(user, item\) pairs are in both"):
            evaluate(scores, sp_.train, test.tocsr())
    explicit_zero = sp_.test.copy()
    explicit_zero.data[:] = 0.0  # stored zeros are not positives: no overlap, no test users
    assert evaluate_ranking(scores, sp_.train, explicit_zero)["n_users"] == 0
