"""Data: CIFAR pickle batches, ImageFolder trees, the official labelled-split JSON, and the offline
digits default (label noise, test corruption, the 5-labels-per-class SSL split).

Every loader returns ``ImageSet(x, y, classes, source)`` with ``x`` uint8 (N, C, H, W) for real
images (float conversion happens per batch) or float32 in [0, 1] for digits. A bad file (corrupt
pickle, undecodable image, wrong shape, empty folder) is a ``UserError`` naming the file.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from labcore.cli import UserError

__all__ = [
    "ImageSet",
    "add_label_noise",
    "corrupt",
    "digits_splits",
    "load_cifar",
    "load_dataset",
    "load_image_folder",
    "load_labeled_split",
    "ssl_split",
    "to_float",
]

IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


@dataclass
class ImageSet:
    x: torch.Tensor  # (N, C, H, W) uint8 or float32 in [0, 1]
    y: torch.Tensor  # (N,) int64
    classes: list[str]
    source: str

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, idx) -> ImageSet:
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return ImageSet(self.x[idx], self.y[idx], self.classes, self.source)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 / 255; float stays."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            d = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError) as e:  # fmt: skip
        raise UserError(f"{path}: not a CIFAR python pickle ({type(e).__name__})") from None
    if not isinstance(d, dict):
        raise UserError(f"{path}: expected a dict of CIFAR arrays, got {type(d).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if "data" not in d or label_key not in d:
        raise UserError(f"{path}: missing 'data' or '{label_key}' (keys: {sorted(d)})")
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise UserError(f"{path}: data must be (N, 3072) with N labels, got {data.shape} and "
                        f"{labels.shape[0]} labels")  # fmt: skip
    if data.dtype != np.uint8:
        raise UserError(f"{path}: data must be uint8, got {data.dtype}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(root: str | Path, split: str = "train") -> ImageSet:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``, ``batches.meta``) or CIFAR-100 (``train``,
    ``test``, ``meta``; fine labels) in the python-pickle layout, from ``root`` or
    ``root/cifar-10-batches-py`` / ``root/cifar-100-python``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such data directory: {root}")
    for sub in ("", "cifar-10-batches-py", "cifar-100-python"):
        base = root / sub
        if (base / "data_batch_1").is_file() or (base / "test_batch").is_file():
            files = [base / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [
                base / "test_batch"]  # fmt: skip
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"CIFAR-10 batch missing: {missing[0]}")
            parts = [_cifar_arrays(f, "labels") for f in files]
            meta = base / "batches.meta"
            classes = ([c.decode() if isinstance(c, bytes) else str(c)
                        for c in _unpickle(meta)["label_names"]] if meta.is_file()
                       else [str(i) for i in range(10)])  # fmt: skip
            name = "cifar10"
            break
        if (base / "train").is_file() or (base / "test").is_file():
            f = base / ("train" if split == "train" else "test")
            if not f.is_file():
                raise FileNotFoundError(f"CIFAR-100 file missing: {f}")
            parts = [_cifar_arrays(f, "fine_labels")]
            meta = base / "meta"
            classes = ([c.decode() if isinstance(c, bytes) else str(c)
                        for c in _unpickle(meta)["fine_label_names"]] if meta.is_file()
                       else [str(i) for i in range(100)])  # fmt: skip
            name = "cifar100"
            break
    else:
        raise UserError(f"{root}: no CIFAR pickle batches (data_batch_1/test_batch or train/test)")
    x = torch.from_numpy(np.concatenate([p[0] for p in parts])).contiguous()
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    if y.numel() and (y.min() < 0 or y.max() >= len(classes)):
        raise UserError(f"{root}: labels outside [0, {len(classes)})")
    return ImageSet(x, y, classes, f"{name}:{root}:{split}")


def load_image_folder(root: str | Path, image_size: int | None = None) -> ImageSet:
    """``root/<class>/<image>`` (torchvision ImageFolder layout), decoded with PIL to RGB uint8.

    All images must share one size unless ``image_size`` is given (then each is resized to it).
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such data directory: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise UserError(f"{root}: no class folders (expected root/<class>/<image>)")
    xs, ys, size = [], [], None
    for ci, c in enumerate(classes):
        files = sorted(p for p in (root / c).iterdir() if p.suffix.lower() in IMG_EXT)
        if not files:
            raise UserError(f"{root / c}: empty class folder (no {', '.join(IMG_EXT)} files)")
        for p in files:
            try:
                with Image.open(p) as im:
                    im = im.convert("RGB")
                    if image_size is not None and im.size != (image_size, image_size):
                        im = im.resize((image_size, image_size), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise UserError(f"{p}: cannot decode image ({type(e).__name__})") from None
            if size is None:
                size = arr.shape
            elif arr.shape != size:
                raise UserError(f"{p}: image size {arr.shape[1]}x{arr.shape[0]} differs from "
                                f"{size[1]}x{size[0]}; pass --image-size to resize")  # fmt: skip
            xs.append(arr)
            ys.append(ci)
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(x, torch.tensor(ys, dtype=torch.long), classes, f"imagefolder:{root}")


def load_dataset(path: str | Path, fmt: str, split: str = "train",
                 image_size: int | None = None) -> ImageSet:  # fmt: skip
    """``fmt`` = ``cifar`` (pickle batches; ``split`` train/test) or ``imagefolder``
    (``path/<split>/<class>/...`` when that exists, else ``path/<class>/...``)."""
    if fmt == "cifar":
        return load_cifar(path, split)
    if fmt == "imagefolder":
        p = Path(path)
        return load_image_folder(p / split if (p / split).is_dir() else p, image_size)
    raise UserError(f"unknown data format {fmt!r} (cifar | imagefolder)")


def load_labeled_split(path: str | Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The official labelled-split JSON (``[labelled_idx, unlabelled_idx]``, e.g.
    ``CIFAR10_50000_40_32_7.json``; the labelled list repeats indices to fill an epoch, so it is
    de-duplicated) or ``{"labeled": [...], "unlabeled": [...]}``. Indices must lie in [0, n)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such split file: {path}")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not JSON ({type(e).__name__})") from None
    if isinstance(d, dict):
        d = [d.get("labeled", d.get("labeled_idx")), d.get("unlabeled", d.get("unlabeled_idx"))]
    if not (isinstance(d, list) and len(d) >= 1 and isinstance(d[0], list)):
        raise UserError(f"{path}: expected [labelled_indices, unlabelled_indices]")
    try:
        lab = np.unique(np.asarray(d[0], dtype=np.int64))
        unl = np.unique(np.asarray(d[1], dtype=np.int64)) if len(d) > 1 and d[1] is not None \
            else np.setdiff1d(np.arange(n), lab)  # fmt: skip
    except (TypeError, ValueError):
        raise UserError(f"{path}: indices must be integers") from None
    for a in (lab, unl):
        if a.size and (a.min() < 0 or a.max() >= n):
            raise UserError(f"{path}: index outside [0, {n})")
    if lab.size == 0:
        raise UserError(f"{path}: no labelled index")
    return lab, unl


def add_label_noise(y: torch.Tensor, rate: float, num_classes: int, seed: int = 0) -> torch.Tensor:
    """Symmetric label noise: a fraction ``rate`` of labels moved to a uniformly drawn *other*
    class (exactly round(rate * N) samples)."""
    if not 0 <= rate <= 1:
        raise UserError(f"label noise rate must be in [0, 1], got {rate}")
    g = torch.Generator().manual_seed(seed)
    n = y.numel()
    flip = torch.randperm(n, generator=g)[: round(rate * n)]
    out = y.clone()
    shift = torch.randint(1, num_classes, (flip.numel(),), generator=g)
    out[flip] = (y[flip] + shift) % num_classes
    return out


def corrupt(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """Test-time Gaussian corruption: clamp(x + N(0, sigma^2), 0, 1) on float images."""
    x = to_float(x)
    if sigma <= 0:
        return x
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp_(0, 1)


def digits_splits(seed: int = 0, n_train: int = 1000) -> tuple[ImageSet, ImageSet]:
    """sklearn digits (8x8, 1 channel, [0, 1]) through labcore: a stratified 1000 / 797 split."""
    from labcore.data import load_digits_images, stratified_split

    x, y = load_digits_images(size=8, channels=1)
    frac = n_train / len(y)
    tr, te = stratified_split(y, [frac, 1 - frac], seed=seed)
    classes = [str(i) for i in range(10)]
    return (ImageSet(x[tr], y[tr], classes, "sklearn-digits:train"),
            ImageSet(x[te], y[te], classes, "sklearn-digits:test"))  # fmt: skip


def ssl_split(y: torch.Tensor, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` labelled indices per class (seeded); the rest are unlabelled."""
    rng = np.random.default_rng(seed)
    yy = y.numpy()
    lab = []
    for c in np.unique(yy):
        idx = np.flatnonzero(yy == c)
        if len(idx) < per_class:
            raise UserError(f"class {c} has {len(idx)} samples, fewer than {per_class} labels")
        lab.append(rng.choice(idx, per_class, replace=False))
    lab = np.sort(np.concatenate(lab))
    return lab, np.setdiff1d(np.arange(len(yy)), lab)
