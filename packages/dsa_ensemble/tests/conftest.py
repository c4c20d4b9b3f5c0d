"""Fixtures that write small real-format data sets (CIFAR pickles, ImageFolder trees)."""

import pickle

import numpy as np
import pytest
from PIL import Image


def write_cifar10(root, n_per_batch=4, n_test=6, seed=0):
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for i in range(1, 6):
        d = {
            b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n_per_batch)],
        }
        (base / f"data_batch_{i}").write_bytes(pickle.dumps(d))
    d = {
        b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
        b"labels": [int(v) for v in rng.integers(0, 10, n_test)],
    }
    (base / "test_batch").write_bytes(pickle.dumps(d))
    names = [f"c{i}".encode() for i in range(10)]
    (base / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    return base


def write_image_folder(root, classes=("cat", "dog"), n=3, size=8, seed=0):
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


@pytest.fixture
def cifar10(tmp_path):
    write_cifar10(tmp_path / "cifar")
    return tmp_path / "cifar"


@pytest.fixture
def image_folder(tmp_path):
    return write_image_folder(tmp_path / "imgs")


@pytest.fixture
def make_image_folder():
    return write_image_folder


@pytest.fixture
def make_cifar10():
    return write_cifar10
