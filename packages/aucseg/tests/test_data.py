import numpy as np
import pytest
import torch
from PIL import Image

from aucseg import (
    OFFICIAL_SMALL_INDEX,
    FolderSegmentation,
    TMemoryBank,
    class_groups,
    find_pairs,
    make_scenes,
    pixel_counts,
    read_label,
    select_tail_classes,
    small_index_preset,
)
from aucseg.data import LAYOUTS
from labcore.cli import UserError

RAW = np.array([[0, 1, 2, 255], [3, 3, 0, 1], [2, 2, 2, 2]], dtype=np.uint8)  # 3x4 label


def write_pair(img_path, ann_path, label, seed=0):
    img_path.parent.mkdir(parents=True, exist_ok=True)
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (*label.shape, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(img_path)
    Image.fromarray(label).save(ann_path)


def make_fixture(root, layout, n=3, label=RAW):
    """Tiny datasets in the real folder layouts; returns the label arrays written."""
    labels = [np.roll(label, i, axis=1) for i in range(n)]
    for i, lab in enumerate(labels):
        if layout == "ade20k":
            base = root / "ADEChallengeData2016"
            img = base / "images/training" / f"ADE_train_{i:08d}.jpg"
            ann = base / "annotations/training" / f"ADE_train_{i:08d}.png"
        elif layout == "cityscapes":
            city = ["aachen", "bonn"][i % 2]
            stem = f"{city}_{i:06d}_000019"
            img = root / "leftImg8bit/train" / city / f"{stem}_leftImg8bit.png"
            ann = root / "gtFine/train" / city / f"{stem}_gtFine_labelTrainIds.png"
        else:
            img = root / "images/train2017" / f"{i:012d}.jpg"
            ann = root / "annotations/train2017" / f"{i:012d}_labelTrainIds.png"
        write_pair(img, ann, lab, seed=i)
    return labels


@pytest.mark.parametrize("layout", ["ade20k", "cityscapes", "cocostuff"])
def test_pairs_by_stem_and_suffix(tmp_path, layout):
    make_fixture(tmp_path, layout, n=4)
    pairs = find_pairs(tmp_path, layout, "train")
    assert len(pairs) == 4
    lay = LAYOUTS[layout]
    for img, ann in pairs:
        assert img.name.endswith(lay.img_suffix) and ann.name.endswith(lay.ann_suffix)
        assert img.name[: -len(lay.img_suffix)] == ann.name[: -len(lay.ann_suffix)]
        assert img.parent.name == ann.parent.name or layout != "cityscapes"
    # a missing annotation is one clear error
    pairs[1][1].unlink()
    with pytest.raises(UserError, match="annotation missing"):
        find_pairs(tmp_path, layout, "train")


def test_missing_folder_and_unknown_layout_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="folder not found"):
        find_pairs(tmp_path, "cityscapes", "train")
    with pytest.raises(UserError, match="unknown layout 'pascal'"):
        find_pairs(tmp_path, "pascal")
    make_fixture(tmp_path, "cocostuff", n=1)
    with pytest.raises(UserError, match="unknown split"):
        find_pairs(tmp_path, "cocostuff", "test")


def test_reduce_zero_label_mapping_and_ignore_passthrough(tmp_path):
    make_fixture(tmp_path, "ade20k", n=1)
    ((_, ann),) = find_pairs(tmp_path / "ADEChallengeData2016", "ade20k")  # root may include it
    reduced = read_label(ann, reduce_zero_label=True)
    expected = np.array([[255, 0, 1, 255], [2, 2, 255, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(reduced, expected)
    np.testing.assert_array_equal(read_label(ann), RAW)  # cityscapes/coco: 255 passes through


def test_rgb_label_is_rejected(tmp_path):
    p = tmp_path / "bad.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p)
    with pytest.raises(UserError, match="single-channel"):
        read_label(p)


def test_pixel_count_scan_reproduces_the_histogram(tmp_path):
    labels = make_fixture(tmp_path, "ade20k", n=3)
    paths = [a for _, a in find_pairs(tmp_path, "ade20k")]
    counts = pixel_counts(paths, num_classes=4, reduce_zero_label=True)
    # per image (np.roll keeps the multiset): raw 1 -> 0 twice, 2 -> 1 five times, 3 -> 2 twice
    np.testing.assert_array_equal(counts, [6, 15, 6, 0])
    raw = pixel_counts(paths, num_classes=4)
    np.testing.assert_array_equal(raw, np.bincount(np.concatenate([x.ravel() for x in labels]))[:4])


def test_official_presets_and_tail_selection():
    assert len(small_index_preset("ade20k")) == 124 and min(small_index_preset("ade20k")) == 26
    assert small_index_preset("cityscapes") == [6, 12, 14, 15, 16, 17, 18]
    coco = small_index_preset("cocostuff")
    assert len(coco) == len(set(coco)) == 123 and max(coco) < 171
    assert set(OFFICIAL_SMALL_INDEX) == {"ade20k", "cityscapes", "cocostuff"}
    with pytest.raises(ValueError, match="no small_index preset"):
        small_index_preset("voc")
    counts = np.array([50, 1000, 3, 400, 7, 0])
    assert select_tail_classes(counts, num_head=2) == [0, 4, 2, 5]
    # head share: 1000 + 400 = 1400 / 1460 = 0.959 >= 0.95 -> head {1, 3}
    assert select_tail_classes(counts, head_share=0.95) == [0, 4, 2, 5]
    assert select_tail_classes(counts, head_share=0.97) == [4, 2, 5]
    with pytest.raises(ValueError, match="exactly one"):
        select_tail_classes(counts)
    groups = class_groups(counts, cuts=(1, 3))
    assert groups == {"head": [1], "middle": [3, 0], "tail": [4, 2, 5]}


def test_folder_dataset_train_and_eval_items(tmp_path):
    label = np.random.default_rng(0).integers(0, 5, (40, 60), dtype=np.uint8)
    make_fixture(tmp_path, "cityscapes", n=3, label=label)
    bank = TMemoryBank(19, [3, 4], p_sample=1.0, seed=0)
    ds = FolderSegmentation(tmp_path, "cityscapes", crop=32, scale=(64, 32), bank=bank)
    img, lab = ds[0]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and lab.shape == (32, 32)
    assert set(torch.unique(lab).tolist()) <= {0, 1, 2, 3, 4, 255}
    ev = FolderSegmentation(tmp_path, "cityscapes", train=False, scale=(30, 20))
    img, lab = ev[1]
    assert lab.shape == (40, 60) and img.shape == (3, 20, 30)


def test_synthetic_scenes_are_long_tailed_and_deterministic():
    a = make_scenes(300, size=64, seed=4)
    b = make_scenes(300, size=64, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    share = a.pixel_counts / a.pixel_counts.sum()
    assert share[6:].sum() < 0.006  # 64² scenes: the same shapes take a larger share than at 96²
    assert (share[:3] > 0.1).all()
    assert sorted(select_tail_classes(a.pixel_counts, head_share=0.99)) == [6, 7, 8, 9]
    pres = a.presence
    assert pres[0] == 1.0 and 0.03 < pres[6] < 0.14 and pres[9] < 0.06
