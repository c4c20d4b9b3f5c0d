"""Loaders for the VTAB-1k list-file layout and ImageFolder, on generated fixtures."""

import numpy as np
import pytest
import torch
from PIL import Image

from labcore.cli import UserError
from snell.data import VTABList, detect_layout, digits_transfer, load_split


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 14, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def vtab_dir(tmp_path):
    root = tmp_path / "vtab-dtd"
    for i in range(6):
        _png(root / "images" / f"{i}.png", 40 * i)
    (root / "train800val200.txt").write_text("images/0.png 0\nimages/1.png 1\nimages/2.png 2\n")
    (root / "test.txt").write_text("images/3.png 2\nimages/4.png 0\n\nimages/5.png 1\n")
    return root


@pytest.fixture
def folder_dir(tmp_path):
    root = tmp_path / "folder"
    for split, n in (("train", 2), ("test", 1)):
        for c in ("cat", "dog"):
            for i in range(n):
                _png(root / split / c / f"{i}.png", 100 if c == "cat" else 200)
    return root


def test_vtab_list_files(vtab_dir):
    assert detect_layout(vtab_dir) == "vtab"
    train = load_split(vtab_dir, "train", img_size=16)
    test = load_split(vtab_dir, "test", img_size=16)
    assert len(train) == 3 and len(test) == 3
    x, y = test[0]
    assert x.shape == (3, 16, 16) and y == 2
    assert [lbl for _, lbl in test.samples] == [2, 0, 1]
    # direct resize + ImageNet normalisation of a constant grey image
    mean = torch.tensor([0.485, 0.456, 0.406])
    std = torch.tensor([0.229, 0.224, 0.225])
    ref = (120 / 255 - mean) / std
    torch.testing.assert_close(x[:, 5, 5], ref, atol=1e-2, rtol=0)


def test_image_folder(folder_dir):
    assert detect_layout(folder_dir) == "imagefolder"
    train = load_split(folder_dir, "train", img_size=8)
    assert len(train) == 4 and train.classes == ["cat", "dog"]
    assert sorted(train.targets) == [0, 0, 1, 1]
    assert train[0][0].shape == (3, 8, 8)


def test_bad_paths_and_layouts(tmp_path, vtab_dir, folder_dir):
    with pytest.raises(FileNotFoundError):
        detect_layout(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError):
        detect_layout(tmp_path / "file.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="neither a VTAB-1k folder"):
        detect_layout(empty)
    with pytest.raises(UserError, match="has no 'val' split"):
        load_split(folder_dir, "val")
    with pytest.raises(UserError, match="unknown VTAB split"):
        VTABList(vtab_dir, "holdout")
    (vtab_dir / "test.txt").write_text("images/0.png zero\n")
    with pytest.raises(UserError, match=r"test.txt:1: expected"):
        VTABList(vtab_dir, "test")
    (vtab_dir / "test.txt").write_text("images/missing.png 1\n")
    with pytest.raises(UserError, match="missing"):
        VTABList(vtab_dir, "test")


def test_digits_transfer_splits():
    d = digits_transfer(seed=1)
    _, ys = d["source_train"]
    assert set(ys.tolist()) == {0, 1, 2, 3, 4}
    X, y = d["train"]
    assert X.shape == (100, 3, 32, 32) and torch.bincount(y).tolist() == [20] * 5
    assert len(d["val"][1]) == 50
    assert len(d["train"][1]) + len(d["val"][1]) + len(d["test"][1]) == 1797 - len(ys) - len(
        d["source_test"][1]
    )
    assert X.min() >= 0 and X.max() <= 1
