"""Loaders on fixtures the tests write, label noise, corruption and splits."""

import json
import pickle

import numpy as np
import pytest
import torch

from dsa_ensemble import (
    add_label_noise,
    corrupt,
    load_cifar,
    load_dataset,
    load_image_folder,
    load_labeled_split,
    ssl_split,
)
from labcore.cli import UserError


def test_cifar10_pickle_layout(cifar10):
    tr = load_cifar(cifar10, "train")
    te = load_cifar(cifar10 / "cifar-10-batches-py", "test")
    assert tr.x.shape == (20, 3, 32, 32) and tr.x.dtype == torch.uint8 and len(te) == 6
    assert tr.classes[3] == "c3"
    raw = pickle.loads((cifar10 / "cifar-10-batches-py" / "data_batch_2").read_bytes())
    # row-major CHW as in the CIFAR files: image 0 of batch 2 is sample 4
    assert torch.equal(tr.x[4].reshape(-1), torch.from_numpy(raw[b"data"][0]))
    assert tr.y[4].item() == raw[b"labels"][0]


def test_cifar100_fine_labels(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("test", 3)):
        d = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"fine_labels": [99, 0, 5, 7, 1][:n],
            b"coarse_labels": [0] * n,
        }
        (base / split).write_bytes(pickle.dumps(d))
    tr = load_cifar(tmp_path, "train")
    assert tr.num_classes == 100 and tr.y.tolist() == [99, 0, 5, 7, 1]


def test_corrupt_and_wrong_shape_pickles(cifar10, tmp_path):
    f = cifar10 / "cifar-10-batches-py" / "data_batch_3"
    f.write_bytes(b"\x80\x04garbage")
    with pytest.raises(UserError, match="data_batch_3"):
        load_cifar(cifar10)
    f.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(UserError, match="3072"):
        load_cifar(cifar10)
    with pytest.raises(UserError, match="no CIFAR"):
        load_cifar(tmp_path / "cifar" / "..")


def test_image_folder_and_bad_trees(image_folder, tmp_path, make_image_folder):
    ds = load_dataset(image_folder, "imagefolder", "train")
    assert ds.x.shape == (6, 3, 8, 8) and ds.classes == ["cat", "dog"]
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    from PIL import Image

    Image.new("RGB", (10, 10)).save(image_folder / "train" / "dog" / "big.png")
    with pytest.raises(UserError, match=r"big\.png"):
        load_image_folder(image_folder / "train")
    assert load_image_folder(image_folder / "train", image_size=8).x.shape[0] == 7
    (image_folder / "train" / "dog" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match=r"bad\.png"):
        load_image_folder(image_folder / "train", image_size=8)
    empty = make_image_folder(tmp_path / "e", n=1)
    (empty / "train" / "bird").mkdir()
    with pytest.raises(UserError, match="empty class folder"):
        load_image_folder(empty / "train")
    with pytest.raises(UserError, match="no class folders"):
        load_image_folder(empty / "train" / "bird")


def test_labeled_split_json(tmp_path):
    p = tmp_path / "CIFAR10_50000_40_32_7.json"
    p.write_text(json.dumps([[5, 3, 5, 3, 9], [0, 1, 2]]))
    lab, unl = load_labeled_split(p, 10)
    assert lab.tolist() == [3, 5, 9] and unl.tolist() == [0, 1, 2]
    p.write_text(json.dumps({"labeled": [1]}))
    lab, unl = load_labeled_split(p, 4)
    assert lab.tolist() == [1] and unl.tolist() == [0, 2, 3]
    p.write_text(json.dumps([[1, 12]]))
    with pytest.raises(UserError, match="outside"):
        load_labeled_split(p, 10)
    p.write_text("{broken")
    with pytest.raises(UserError, match="not JSON"):
        load_labeled_split(p, 10)


def test_label_noise_is_exact_and_symmetric():
    y = torch.arange(1000) % 10
    noisy = add_label_noise(y, 0.4, 10, seed=1)
    changed = noisy != y
    assert changed.sum().item() == 400  # exactly round(rate * N), always to another class
    counts = torch.bincount(noisy[changed], minlength=10)
    assert counts.min() > 20  # spread over the classes
    assert torch.equal(add_label_noise(y, 0.0, 10), y)


def test_corruption_and_ssl_split():
    x = torch.full((2, 1, 4, 4), 0.5)
    c = corrupt(x, 0.3, seed=0)
    assert c.min() >= 0 and c.max() <= 1 and abs((c - 0.5).std().item() - 0.3) < 0.1
    assert torch.equal(corrupt(x, 0.0), x)
    y = torch.arange(100) % 10
    lab, unl = ssl_split(y, 5, seed=0)
    assert len(lab) == 50 and np.bincount(y[lab].numpy()).tolist() == [5] * 10
    assert len(np.intersect1d(lab, unl)) == 0 and len(lab) + len(unl) == 100
