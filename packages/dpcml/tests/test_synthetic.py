"""The synthetic multi-interest generator, interest recall, and the training loop."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dpcml import DPCML, DPCMLConfig, fit, interest_recall, make_multi_interest, split_per_user


def test_generator_shapes_and_interest_mix():
    d = make_multi_interest(seed=3, num_users=300)
    assert d.matrix.shape == (300, 1200)
    n = np.diff(d.matrix.indptr)
    assert n.min() >= 20 and n.max() <= 60
    assert (d.user_major != d.user_minor).all()
    rows = np.repeat(np.arange(300), n)
    cats = d.item_category[d.matrix.indices]
    n_major = np.bincount(rows[cats == d.user_major[rows]], minlength=300)
    n_minor = np.bincount(rows[cats == d.user_minor[rows]], minlength=300)
    np.testing.assert_array_equal(n_major + n_minor, n)  # only the two interests
    np.testing.assert_array_equal(n_major, np.round(0.75 * n))
    # majority interest drawn ∝ category size: the 480-item category is the most common
    assert np.bincount(d.user_major, minlength=6).argmax() == 0
    # Zipf inside a category: the head item of category 0 is liked more than its tail items
    pop = np.asarray(d.matrix.sum(0)).ravel()
    assert pop[0] > pop[400:480].mean() * 5
    again = make_multi_interest(seed=3, num_users=300)
    assert (again.matrix != d.matrix).nnz == 0


def test_interest_recall_by_hand():
    test = sp.csr_matrix(np.array([[1, 1, 0, 1, 0], [0, 0, 1, 0, 0], [1, 0, 0, 0, 0]], np.float32))
    item_cat = np.array([0, 1, 1, 0, 1])
    user_cat = np.array([1, 1, 1])  # user 2 has no test item of category 1 -> skipped
    top = np.array([[1, 4], [0, 3], [1, 2]])
    recall, n = interest_recall(top, test, item_cat, user_cat)
    # user 0: relevant {1}, found 1 -> 1.0; user 1: relevant {2}, found 0 -> 0.0
    assert n == 2 and recall == pytest.approx(0.5)


def test_fit_learns_and_keeps_the_best_validation_epoch():
    d = make_multi_interest(0, num_users=200, category_sizes=(60, 50, 40, 30), n_range=(10, 30))
    s = split_per_user(d.matrix, seed=0)
    torch.manual_seed(0)
    cfg = DPCMLConfig(dim=8, n_vectors=2, sampling="hard", batch_size=256, epochs=4, lr=1e-2)
    model = DPCML(*d.matrix.shape, cfg)
    result = fit(model, s.train, s.val, seed=0)
    losses = [h["loss"] for h in result.history]
    vals = [h["val_P@3"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.best_val == max(vals) and vals[result.best_epoch] == max(vals)
    assert result.tuples_seen == 4 * s.train.nnz
    norms = model.user_vectors().norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_demo_budget_gives_every_arm_the_same_steps():
    import math

    from dpcml.demo import ARMS, PROTOCOL, STEPS, epochs_for, make_demo_data

    _, split = make_demo_data()
    for arm, over in ARMS.items():
        s = PROTOCOL["num_negatives"] if over["sampling"] == "uniform" else 1
        steps = epochs_for(arm, split.train) * math.ceil(split.train.nnz * s / 256)
        assert abs(steps - STEPS) <= 0.02 * STEPS, arm
    assert epochs_for("CML-hard", split.train) == 10 * epochs_for("CML-uniform", split.train)
