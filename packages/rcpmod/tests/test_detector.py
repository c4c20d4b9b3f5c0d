"""The detector: PyOD/scikit-learn shape, determinism, pairwise training, inductive scores."""

import numpy as np
import pytest
import torch
from sklearn.base import clone

from rcpmod import RCPMOD
from rcpmod.data import make_synthetic
from rcpmod.mask import make_missing_mask

TINY = dict(hidden=(16,), latent=8, epochs=3, batch_size=32, n_neighbors=3, neg_rank=5,
            change_knn_epoch=2, impute_start_epoch=1, warmup_epochs=2)  # fmt: skip


@pytest.fixture(scope="module")
def data():
    d = make_synthetic(n=80, dims=(6, 5, 4), n_classes=3, seed=0)
    mask = make_missing_mask(d.n, 3, 0.3, 0)
    return d.views, mask


def test_fit_returns_self_and_sets_pyod_attributes(data):
    views, mask = data
    det = RCPMOD(contamination=0.1, **TINY)
    assert det.fit(views[:2], mask[:, :2] | ~mask[:, :2].any(1, keepdims=True)) is det
    n = len(mask)
    assert det.decision_scores_.shape == (n,) and np.isfinite(det.decision_scores_).all()
    assert det.labels_.sum() == (det.decision_scores_ > det.threshold_).sum()
    assert abs(det.labels_.mean() - 0.1) <= 0.02
    assert det.autoencoders_[0].encoder[0].weight.dtype == torch.float64
    assert len(det.history_) == 1 and len(det.history_[0]) == 3
    assert [h["w"] for h in det.history_[0]] == [0.0, 0.02, 0.02]


def test_three_views_train_all_pairs_with_shared_autoencoders(data):
    views, mask = data
    det = RCPMOD(**TINY).fit(views, mask)
    assert det.pairs_ == [(0, 1), (0, 2), (1, 2)]
    assert det.pair_scores_.shape == (len(mask), 3) and len(det.autoencoders_) == 3
    # a sample takes part in a pair iff it has one of the two views; the final score is the
    # mean of its non-zero pair scores
    s = det.pair_scores_
    for j, (a, b) in enumerate(det.pairs_):
        assert (s[~(mask[:, a] | mask[:, b]), j] == 0).all()
    nz = s != 0
    np.testing.assert_allclose(det.decision_scores_, (s * nz).sum(1) / np.maximum(nz.sum(1), 1))
    # the view-1 autoencoder carries on from pair (0, 1) into pair (1, 2): training pair (0, 1)
    # alone leaves it elsewhere
    alone = RCPMOD(**TINY).fit(views[:2], mask[:, :2] | ~mask[:, :2].any(1, keepdims=True))
    w_all = det.autoencoders_[1].encoder[0].weight
    w_alone = alone.autoencoders_[1].encoder[0].weight
    assert not torch.allclose(w_all, w_alone)


def test_deterministic_with_a_seed_and_seed_sensitive(data):
    views, mask = data
    a = RCPMOD(random_state=3, **TINY).fit(views, mask).decision_scores_
    b = RCPMOD(random_state=3, **TINY).fit(views, mask).decision_scores_
    c = RCPMOD(random_state=4, **TINY).fit(views, mask).decision_scores_
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    d = RCPMOD(random_state=3, shuffle="fixed", **TINY).fit(views, mask).decision_scores_
    e = RCPMOD(random_state=3, shuffle="fixed", **TINY).fit(views, mask).decision_scores_
    np.testing.assert_array_equal(d, e)
    assert not np.allclose(a, d)


def test_sklearn_params_clone_round_trip():
    det = RCPMOD(contamination=0.05, epochs=7, hidden=(8, 8), use_memory=False)
    params = det.get_params()
    assert params["epochs"] == 7 and params["hidden"] == (8, 8) and not params["use_memory"]
    twin = clone(det)
    assert twin.get_params() == params and twin is not det
    det.set_params(epochs=2, rw=0.3)
    assert det.resolved_params()["epochs"] == 2 and det.resolved_params()["rw"] == 0.3
    assert RCPMOD(preset="handwritten").resolved_params()["rw"] == 0.7
    assert RCPMOD(preset="fashion").resolved_params()["latent"] == 256


def test_new_samples_predict_and_proba(data):
    views, mask = data
    det = RCPMOD(**TINY).fit([v[:60] for v in views], mask[:60])
    new = [v[60:] for v in views]
    s = det.decision_function(new, mask[60:])
    assert s.shape == (20,) and np.isfinite(s).all()
    assert set(np.unique(det.predict(new, mask[60:]))) <= {0, 1}
    p = det.predict_proba(new, mask[60:])
    assert p.shape == (20, 2) and np.allclose(p.sum(1), 1) and (p >= 0).all()
    # a noise sample in every view scores above the median training sample
    rng = np.random.default_rng(0)
    noise = [rng.random((1, v.shape[1])) for v in views]
    assert det.decision_function(noise)[0] > np.median(det.decision_scores_)


def test_ablations_and_bf16_run(data):
    views, mask = data
    views, mask = views[:2], mask[:, :2] | ~mask[:, :2].any(1, keepdims=True)
    arms = ({"use_memory": False}, {"use_nac": False}, {"use_sr": False}, {"sr_weight": 0.2},
            {"impute": "zero"}, {"pair_average": "participating"})  # fmt: skip
    for kw in arms:
        s = RCPMOD(**TINY, **kw).fit(views, mask).decision_scores_
        assert np.isfinite(s).all()
    det = RCPMOD(**TINY, dtype="float32", precision="bf16").fit(views, mask)
    assert det.autoencoders_[0].encoder[0].weight.dtype == torch.float32
    assert np.isfinite(det.decision_scores_).all()
    with pytest.raises(ValueError, match="float64 untouched"):
        RCPMOD(**TINY, precision="bf16").fit(views, mask)


@pytest.mark.parametrize(
    "views,mask,match",
    [
        ([np.zeros((10, 2))], None, "at least 2"),
        ([np.zeros((10, 2)), np.zeros((9, 2))], None, "different numbers of rows"),
        ([np.zeros((10, 2)), np.full((10, 2), np.nan)], None, "NaN"),
        ([np.zeros((10, 2)), np.zeros(10)], None, "2-D"),
        ([np.zeros((10, 2)), np.zeros((10, 2))], np.zeros((10, 3), bool), "shape"),
        (
            [np.zeros((10, 2)), np.zeros((10, 2))],
            np.r_[[[False, False]], np.ones((9, 2), bool)],
            "all views missing",
        ),
    ],
)
def test_bad_input_one_line_value_error(views, mask, match):
    with pytest.raises(ValueError, match=match) as e:
        RCPMOD(**TINY).fit(views, mask)
    assert "\n" not in str(e.value)


def test_nan_in_a_missing_view_is_ignored():
    rng = np.random.default_rng(0)
    a, b = rng.random((30, 3)), rng.random((30, 2))
    mask = np.ones((30, 2), bool)
    mask[0, 1] = False
    b[0] = np.nan
    assert np.isfinite(RCPMOD(**TINY).fit([a, b], mask).decision_scores_).all()


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="preset"):
        RCPMOD(preset="nope").resolved_params()
    with pytest.raises(ValueError, match="contamination"):
        RCPMOD(contamination=0.9).resolved_params()
    with pytest.raises(ValueError, match="impute"):
        RCPMOD(impute="mean").resolved_params()
    with pytest.raises(ValueError, match="not fitted"):
        RCPMOD().decision_function([np.zeros((3, 2)), np.zeros((3, 2))])
