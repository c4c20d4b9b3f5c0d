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


def _bad_files(folder):
    """An empty file, a non-image with an image suffix, a truncated PNG and a truncated JPEG."""
    import io

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_bytes(b"this is not an image\n")
    for fmt, name, keep in (("PNG", "cut.png", 0.5), ("JPEG", "cut.jpg", 0.9)):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, fmt)
        (folder / name).write_bytes(buf.getvalue()[: int(len(buf.getvalue()) * keep)])
    return ["empty.png", "text.jpg", "cut.png", "cut.jpg"]


def test_every_bad_file_kind_is_named(tmp_path):
    from snell.data import check_images, read_image

    names = _bad_files(tmp_path / "bad")
    for name in names:
        path = tmp_path / "bad" / name
        with pytest.raises(UserError, match=rf"unreadable image .*{name}") as e:
            read_image(path)
        assert "\n" not in str(e.value)
    # the header check catches all but the truncated JPEG (its header is intact) before training
    good = tmp_path / "good.png"
    _png(good, 7)
    for name in names[:3]:
        with pytest.raises(UserError, match=rf"{name}.*--skip-bad-images"):
            check_images([(good, 0), (tmp_path / "bad" / name, 1)], "here")
    assert check_images([(good, 0), (tmp_path / "bad" / "cut.jpg", 1)], "here")[1] == 0
    # skipping decodes everything, so it drops all four and counts them
    samples = [(good, 0)] + [(tmp_path / "bad" / n, 1) for n in names]
    kept, skipped = check_images(samples, "here", skip_bad=True)
    assert kept == [(good, 0)] and skipped == 4
    with pytest.raises(UserError, match="no readable images"):
        check_images(samples[1:], "here", skip_bad=True)


def test_corrupt_image_in_image_folder_and_vtab(folder_dir, vtab_dir, capsys):
    (folder_dir / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(UserError, match=r"unreadable image .*dog/broken\.png"):
        load_split(folder_dir, "train")
    ds = load_split(folder_dir, "train", img_size=8, skip_bad=True)
    assert len(ds) == 4 and ds.skipped == 1 and len(ds.targets) == 4
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().err
    (vtab_dir / "images" / "1.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"images/1\.png: empty file"):
        load_split(vtab_dir, "train")
    assert load_split(vtab_dir, "train", skip_bad=True).skipped == 1


def test_list_file_encoding_and_labels(vtab_dir):
    (vtab_dir / "test.txt").write_bytes(b"images/0.png 1\n\xff\xfe bad\n")
    with pytest.raises(UserError, match=r"test\.txt: not UTF-8"):
        VTABList(vtab_dir, "test")
    (vtab_dir / "test.txt").write_text("images/0.png -1\n")
    with pytest.raises(UserError, match=r"test\.txt:1: expected '<image path> <label >= 0>'"):
        VTABList(vtab_dir, "test")


@pytest.mark.parametrize(
    "array, mode, expected",
    [
        (np.full((4, 4), 40000, np.uint16), "I;16", 156),  # 16-bit: scaled, not clipped white
        (np.full((4, 4), 0.5, np.float32), "F", 128),  # float in [0, 1]
        (np.full((4, 4), 100, np.uint8), "L", 100),
    ],
)
def test_image_modes_become_rgb_in_range(tmp_path, array, mode, expected):
    from snell.data import _to_rgb, read_image

    img = Image.fromarray(array)
    assert img.mode == mode
    assert np.asarray(_to_rgb(img))[0, 0].tolist() == [expected] * 3
    if mode != "F":  # PNG cannot hold float; the others round-trip through a file
        img.save(tmp_path / "x.png")
        assert np.asarray(read_image(tmp_path / "x.png"))[0, 0].tolist() == [expected] * 3
    rgba = Image.fromarray(np.full((4, 4, 4), 9, np.uint8), mode="RGBA")
    assert _to_rgb(rgba).mode == "RGB"
