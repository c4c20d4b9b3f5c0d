"""Loaders for the official .mat/.npz layouts on fixtures written here; shipped data; baselines."""

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from labcore.cli import UserError
from rcpmod.baselines import baseline_scores, ecod_score, knn_jaccard_score, knn_score
from rcpmod.data import load_file, load_official, load_shipped


def _cell(*arrays):
    c = np.empty((1, len(arrays)), dtype=object)
    for i, a in enumerate(arrays):
        c[0, i] = a
    return c


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_scene15_mat(tmp_path, rng):
    x1, x2, y = rng.random((30, 20)) * 5, rng.random((30, 59)), rng.integers(1, 16, (30, 1))
    scipy.io.savemat(tmp_path / "Scene-15.mat", {"X": _cell(x1, x2), "Y": y})
    d = load_official("scene15", tmp_path)
    assert [v.shape for v in d.views] == [(30, 20), (30, 59)] and d.labels.shape == (30,)
    assert d.views[0].min() == 0 and d.views[0].max() == 1  # global min-max per view
    np.testing.assert_allclose(d.views[0], (x1 - x1.min()) / (x1.max() - x1.min()))


def test_landuse21_uses_views_1_and_2_even_sparse(tmp_path, rng):
    views = [sp.csr_matrix(rng.random((25, d))) for d in (20, 59, 40)]
    scipy.io.savemat(tmp_path / "LandUse-21.mat", {"X": _cell(*views), "Y": np.arange(25)[:, None]})
    d = load_official("landuse21", tmp_path / "LandUse-21.mat")
    assert [v.shape[1] for v in d.views] == [59, 40]


def test_handwritten_six_views_per_feature_minmax(tmp_path, rng):
    dims = (240, 76, 216, 47, 64, 6)
    views = [rng.random((20, d)) * 3 + 1 for d in dims]
    scipy.io.savemat(tmp_path / "handwritten.mat", {"X": _cell(*views), "Y": np.arange(20) % 10})
    d = load_official("handwritten", tmp_path)
    assert [v.shape[1] for v in d.views] == list(dims)
    np.testing.assert_allclose(d.views[5].min(0), 0) and np.testing.assert_allclose(
        d.views[5].max(0), 1
    )


def test_fashion_mat_and_bdgp_npz(tmp_path, rng):
    imgs = {f"X{i}": rng.random((12, 28, 28)) for i in (1, 2, 3)}
    scipy.io.savemat(tmp_path / "Fashion.mat", {**imgs, "Y": np.arange(12)})
    d = load_official("fashion", tmp_path)
    assert [v.shape for v in d.views] == [(12, 784), (12, 784)]
    np.savez(tmp_path / "bdgp.npz", n_views=2, view_0=rng.random((15, 1750)),
             view_1=rng.random((15, 79)), labels=np.arange(15) % 5)  # fmt: skip
    d = load_official("bdgp", tmp_path)
    assert [v.shape[1] for v in d.views] == [1750, 79] and len(d.labels) == 15


def test_bad_files_name_the_file(tmp_path, rng):
    bad = tmp_path / "Scene-15.mat"
    bad.write_bytes(b"MATLAB 5.0 truncated")
    with pytest.raises(UserError, match=r"Scene-15\.mat"):
        load_file(bad)
    scipy.io.savemat(tmp_path / "w.mat", {"Z": np.ones((3, 3))})
    with pytest.raises(UserError, match="no 'X'"):
        load_file(tmp_path / "w.mat", "scene15")
    np.savez(tmp_path / "b.npz", foo=np.ones(3))
    with pytest.raises(UserError, match="n_views"):
        load_file(tmp_path / "b.npz")
    (tmp_path / "t.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(UserError, match=r"t\.npz"):
        load_file(tmp_path / "t.npz")
    scipy.io.savemat(tmp_path / "s.mat", {"X": _cell(rng.random((11, 2)), rng.random((12, 2))),
                                          "Y": np.arange(11)})  # fmt: skip
    with pytest.raises(UserError, match="view 1 has shape"):
        load_file(tmp_path / "s.mat", "scene15")
    with pytest.raises(FileNotFoundError):
        load_official("scene15", tmp_path / "nowhere")


def test_shipped_datasets():
    shapes = {"breast_cancer": [15, 15], "wine": [6, 7], "digits": [32, 32],
              "digits3": [64, 112, 16], "digits_pooled": [16, 16]}  # fmt: skip
    for name, dims in shapes.items():
        d = load_shipped(name)
        assert [v.shape[1] for v in d.views] == dims
        assert all(v.min() == 0 and v.max() == 1 for v in d.views)
    s1, s2 = load_shipped("synthetic", n=300, seed=1), load_shipped("synthetic", n=300, seed=1)
    np.testing.assert_array_equal(s1.views[1], s2.views[1])


def test_baselines_against_brute_force(rng):
    x = rng.random((40, 3))
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(knn_score(x, 5), np.sort(d, 1)[:, 4])
    # ECOD on one feature: max of the left/right tail -log ECDF sums
    v = np.array([[1.0], [2.0], [3.0], [10.0]])
    left = -np.log(np.array([1, 2, 3, 4]) / 4)
    right = -np.log(np.array([4, 3, 2, 1]) / 4)
    np.testing.assert_allclose(ecod_score(v), np.maximum(left, right))
    # kNN-Jaccard: identical views agree perfectly -> 0 inconsistency
    views, mask = [x, x.copy()], np.ones((40, 2), bool)
    np.testing.assert_allclose(knn_jaccard_score(views, mask, k=4, add_knn=False), 0.0)
    out = baseline_scores(views, mask)
    assert set(out) == {"IForest", "KNN", "LOF", "ECOD", "kNN-Jaccard"}


def test_builtin_baselines_match_pyod_when_installed(rng):
    pytest.importorskip("pyod")
    x = rng.random((60, 4))
    views, mask = [x[:, :2], x[:, 2:]], np.ones((60, 2), bool)
    ours = baseline_scores(views, mask, ("KNN", "LOF", "ECOD"))
    theirs = baseline_scores(views, mask, ("KNN", "LOF", "ECOD"), backend="pyod")
    for k in ours:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-6)
