"""Data plumbing shared by the packages: the data root, seeded splits, the offline image set."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["data_root", "load_digits_images", "split_indices", "stratified_split"]


def data_root() -> Path:
    """Where datasets live: ``$LABCORE_DATA`` if set, else the user cache dir (``.../labcore``)."""
    env = os.environ.get("LABCORE_DATA")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("labcore"))


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) == 0 or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {list(fractions)}")
    return f


def _cut(idx: np.ndarray, f: np.ndarray) -> list[np.ndarray]:
    bounds = np.round(np.cumsum(f) * len(idx)).astype(np.int64)
    return np.split(idx, bounds[:-1])


def split_indices(n: int, fractions: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """A seeded random partition of ``range(n)`` into parts of the given fractions."""
    f = _check_fractions(fractions)
    return _cut(np.random.default_rng(seed).permutation(n), f)


def stratified_split(labels, fractions: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """Seeded split that keeps each class's proportions in every part (sorted indices)."""
    f = _check_fractions(fractions)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).ravel()
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in f]
    for c in np.unique(y):
        for part, chunk in zip(parts, _cut(rng.permutation(np.flatnonzero(y == c)), f)):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def load_digits_images(size: int = 32, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's shipped 8x8 ``digits`` (1,797 images, 10 classes) as image tensors.

    Returns ``X`` float32 of shape (N, channels, size, size) in [0, 1] (bilinear resize, channel
    repeated) and ``y`` int64 of shape (N,). Offline: the data ships inside scikit-learn.
    """
    from sklearn.datasets import load_digits

    if size < 1 or channels < 1:
        raise ValueError("size and channels must be positive")
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.clamp_(0.0, 1.0).repeat(1, channels, 1, 1).contiguous()
    return x, torch.from_numpy(digits.target.astype(np.int64))
