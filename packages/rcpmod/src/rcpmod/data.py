"""Multi-view data: the official on-disk formats and the shipped offline datasets.

Official formats (read from a path, ``--data``, or ``$LABCORE_DATA/rcpmod``):

* ``Scene-15.mat``: ``X`` a 1 × 2 cell of ``(n, d_v)`` matrices (20, 59), ``Y`` labels;
* ``LandUse-21.mat``: ``X`` a 1 × 3 cell (possibly sparse); views 1 and 2 (59, 40) are used;
* ``handwritten.mat``: ``X`` a 1 × 6 cell (240/76/216/47/64/6), each min-max scaled per
  feature by the loader (official ``util.normalize``);
* ``Fashion.mat``: ``X1``, ``X2``, ``X3`` (n × 28 × 28 or n × 784) and ``Y``; views 1 and 2;
* ``bdgp.npz`` (and any ``.npz`` in that layout, e.g. Fashion): ``n_views``, ``view_0`` …,
  ``labels``.

Shipped data (no download; spec B6): ``breast_cancer`` (2 feature halves), ``wine`` (2 halves),
``digits`` (top / bottom 32 pixels), ``digits3`` (pixels, 112 gradient features, 16 row/column
profiles), ``digits_pooled`` (2 × 2 average-pooled image and pooled gradient magnitude, 16 each:
the harder variant), and ``synthetic`` (a seeded multi-view Gaussian-cluster generator, any n).
Every view is globally min-max scaled (official pre-processing).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labcore.cli import UserError
from rcpmod.inject import minmax_global

__all__ = ["OFFICIAL", "SHIPPED", "MultiViewData", "load_file", "load_official", "load_shipped",
           "make_synthetic"]  # fmt: skip

OFFICIAL = {
    "scene15": "Scene-15.mat",
    "landuse21": "LandUse-21.mat",
    "handwritten": "handwritten.mat",
    "fashion": "Fashion.mat",
    "bdgp": "bdgp.npz",
}
SHIPPED = ("breast_cancer", "wine", "digits", "digits3", "digits_pooled", "synthetic")


@dataclass
class MultiViewData:
    """Views ``(n, d_v)`` (float64), class labels ``(n,)`` and a name."""

    views: list[np.ndarray]
    labels: np.ndarray
    name: str

    @property
    def n(self) -> int:
        return len(self.labels)

    def describe(self) -> str:
        dims = "/".join(str(v.shape[1]) for v in self.views)
        return f"{self.name}: n={self.n}, {len(self.views)} views ({dims}), " \
               f"{len(np.unique(self.labels))} classes"  # fmt: skip


def _checked(views, labels, path, name) -> MultiViewData:
    views = [np.asarray(v, dtype=np.float64) for v in views]
    labels = np.asarray(labels).reshape(-1)
    if len(views) < 2:
        raise UserError(f"{path}: needs at least 2 views, found {len(views)}")
    for v, x in enumerate(views):
        if x.ndim != 2 or x.shape[0] != len(labels) or x.shape[1] == 0:
            raise UserError(f"{path}: view {v} has shape {x.shape}, expected ({len(labels)}, d)")
        if not np.isfinite(x).all():
            raise UserError(f"{path}: view {v} has NaN or infinite values")
    if len(labels) < 10:
        raise UserError(f"{path}: only {len(labels)} samples")
    return MultiViewData(views, labels, name)


def _dense(x) -> np.ndarray:
    if hasattr(x, "toarray"):
        x = x.toarray()
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(x.shape[0], -1)


def _cell(mat, key, path) -> list:
    if key not in mat:
        raise UserError(
            f"{path}: no '{key}' variable (found {sorted(k for k in mat if k[:2] != '__')})"
        )
    cell = np.asarray(mat[key], dtype=object)
    return list(cell.reshape(-1))


def _per_feature_minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(0), x.max(0)
    return (x - lo) / np.where(hi > lo, hi - lo, 1.0)


def load_file(path: str | Path, kind: str | None = None) -> MultiViewData:
    """Read one official data file; ``kind`` (a key of :data:`OFFICIAL`) or guessed from the name.

    Bad files (missing, truncated, wrong keys or shapes) raise :class:`UserError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    if kind is None:
        stem = path.name.lower().replace("-", "").replace("_", "")
        kind = next((k for k in OFFICIAL if stem.startswith(k[:5])), None)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                if "n_views" not in data or "labels" not in data:
                    raise UserError(f"{path}: expected keys n_views, view_0.., labels; "
                                    f"found {sorted(data.files)}")  # fmt: skip
                views = [_dense(data[f"view_{i}"]) for i in range(int(data["n_views"]))]
                labels = data["labels"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            raise UserError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
        return _checked(views, labels, path, kind or path.stem)
    if path.suffix != ".mat":
        raise UserError(f"{path}: expected a .mat or .npz file")
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises ValueError/TypeError/OSError on broken files
        raise UserError(f"{path}: not a readable .mat file ({type(e).__name__})") from None
    if kind == "fashion" or ("X1" in mat and "X2" in mat):
        views = [_dense(mat["X1"]), _dense(mat["X2"])]
        labels = mat.get("Y")
        if labels is None:
            raise UserError(f"{path}: no 'Y' variable")
        return _checked(views, labels, path, kind or "fashion")
    cells = _cell(mat, "X", path)
    if "Y" not in mat:
        raise UserError(f"{path}: no 'Y' variable")
    try:
        views = [_dense(c) for c in cells]
    except (TypeError, ValueError):
        raise UserError(f"{path}: 'X' is not a cell of numeric matrices") from None
    if kind == "landuse21":
        if len(views) < 3:
            raise UserError(f"{path}: LandUse-21 needs 3 views in X, found {len(views)}")
        views = views[1:3]
    elif kind == "handwritten":
        views = [_per_feature_minmax(v) for v in views]
    return _checked(views, mat["Y"], path, kind or path.stem)


def load_official(name: str, data: str | Path | None = None) -> MultiViewData:
    """An official dataset by name from ``data`` (a file or a folder) or ``$LABCORE_DATA/rcpmod``,
    globally min-max scaled per view (Handwritten: per feature, by its loader)."""
    if name not in OFFICIAL:
        raise UserError(f"unknown dataset {name!r}; official: {', '.join(OFFICIAL)}")
    if data is None:
        root = Path(os.environ.get("LABCORE_DATA", Path.home() / ".cache" / "labcore"))
        data = root / "rcpmod"
    data = Path(data)
    path = data / OFFICIAL[name] if data.is_dir() else data
    d = load_file(path, name)
    if name != "handwritten":
        d.views = [minmax_global(v) for v in d.views]
    return d


def _digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.reshape(-1, 8, 8) / 16.0, y


def make_synthetic(n: int = 2000, dims: tuple[int, ...] = (20, 30), n_classes: int = 10,
                   seed: int = 0) -> MultiViewData:  # fmt: skip
    """Seeded multi-view clusters: a class centre in an 8-d latent space plus a per-sample
    offset, mapped to each view by its own random 2-layer tanh map (so views agree on the
    class but not on the coordinates)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, (n_classes, 8))
    y = rng.integers(0, n_classes, n)
    z = centres[y] + rng.normal(0, 0.5, (n, 8))
    views = []
    for d in dims:
        w1, w2 = rng.normal(0, 0.6, (8, 32)), rng.normal(0, 0.4, (32, d))
        views.append(minmax_global(np.tanh(np.tanh(z @ w1) @ w2)))
    return MultiViewData(views, y, f"synthetic(n={n})")


def load_shipped(name: str, n: int = 2000, seed: int = 0) -> MultiViewData:
    """One of :data:`SHIPPED` (``n``/``seed`` only for ``synthetic``)."""
    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        x, y = load_breast_cancer(return_X_y=True)
        views = [x[:, :15], x[:, 15:]]
    elif name == "wine":
        from sklearn.datasets import load_wine

        x, y = load_wine(return_X_y=True)
        views = [x[:, :6], x[:, 6:]]
    elif name in ("digits", "digits3", "digits_pooled"):
        img, y = _digits()
        if name == "digits":
            views = [img[:, :4].reshape(-1, 32), img[:, 4:].reshape(-1, 32)]
        elif name == "digits3":
            grad = np.concatenate([np.abs(np.diff(img, axis=2)).reshape(-1, 56),
                                   np.abs(np.diff(img, axis=1)).reshape(-1, 56)], 1)  # fmt: skip
            prof = np.concatenate([img.sum(2), img.sum(1)], 1)
            views = [img.reshape(-1, 64), grad, prof]
        else:
            gy, gx = np.gradient(img, axis=(1, 2))
            mag = np.hypot(gx, gy)
            views = [img.reshape(-1, 4, 2, 4, 2).mean((2, 4)).reshape(-1, 16),
                     mag.reshape(-1, 4, 2, 4, 2).mean((2, 4)).reshape(-1, 16)]  # fmt: skip
    elif name == "synthetic":
        return make_synthetic(n=n, seed=seed)
    else:
        raise UserError(f"unknown shipped dataset {name!r}; choose from {', '.join(SHIPPED)}")
    return MultiViewData([minmax_global(np.asarray(v, float)) for v in views], np.asarray(y), name)
