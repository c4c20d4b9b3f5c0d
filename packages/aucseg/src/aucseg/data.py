"""Readers for the ADE20K, Cityscapes and COCO-Stuff-164k folder layouts, the pixel-count scan,
and the training / evaluation datasets (mmseg conventions: ``reduce_zero_label``, ignore 255)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from labcore.cli import UserError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYOUTS",
    "FolderSegmentation",
    "Layout",
    "TensorSegmentation",
    "check_pairs",
    "find_pairs",
    "normalize",
    "pixel_counts",
    "read_image",
    "read_label",
]

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # mmseg img_norm_cfg, RGB in [0, 255]
IMAGENET_STD = (58.395, 57.12, 57.375)
IGNORE = 255


@dataclass(frozen=True)
class Layout:
    """Where images and labels of one dataset live, relative to its root, per split."""

    name: str
    num_classes: int
    img_dir: dict[str, str]
    ann_dir: dict[str, str]
    img_suffix: str
    ann_suffix: str
    reduce_zero_label: bool
    subdir: str = ""  # a folder the root may (or may not) include, e.g. ADEChallengeData2016


LAYOUTS: dict[str, Layout] = {
    "ade20k": Layout(
        "ade20k",
        150,
        {"train": "images/training", "val": "images/validation"},
        {"train": "annotations/training", "val": "annotations/validation"},
        ".jpg",
        ".png",
        reduce_zero_label=True,
        subdir="ADEChallengeData2016",
    ),
    "cityscapes": Layout(
        "cityscapes",
        19,
        {"train": "leftImg8bit/train", "val": "leftImg8bit/val"},
        {"train": "gtFine/train", "val": "gtFine/val"},
        "_leftImg8bit.png",
        "_gtFine_labelTrainIds.png",
        reduce_zero_label=False,
    ),
    "cocostuff": Layout(
        "cocostuff",
        171,
        {"train": "images/train2017", "val": "images/val2017"},
        {"train": "annotations/train2017", "val": "annotations/val2017"},
        ".jpg",
        "_labelTrainIds.png",
        reduce_zero_label=False,
    ),
}


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise UserError(f"unknown layout {name!r}; choose from {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def find_pairs(root: str | Path, layout: str, split: str = "train") -> list[tuple[Path, Path]]:
    """(image, label) paths of one split, paired by the path stem below the split folder.

    Raises :class:`labcore.cli.UserError` for a missing folder, an empty split or an image
    without its annotation.
    """
    lay = get_layout(layout)
    root = Path(root)
    if lay.subdir and (root / lay.subdir).is_dir():
        root = root / lay.subdir
    if split not in lay.img_dir:
        raise UserError(f"unknown split {split!r} for {layout}; choose from {list(lay.img_dir)}")
    img_dir, ann_dir = root / lay.img_dir[split], root / lay.ann_dir[split]
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            raise UserError(f"{layout} layout: folder not found: {d}")
    images = sorted(img_dir.rglob(f"*{lay.img_suffix}"))
    if not images:
        raise UserError(f"{layout} layout: no '*{lay.img_suffix}' images under {img_dir}")
    pairs = []
    for img in images:
        stem = str(img.relative_to(img_dir))[: -len(lay.img_suffix)]
        ann = ann_dir / (stem + lay.ann_suffix)
        if not ann.is_file():
            raise UserError(f"{layout} layout: annotation missing for {img}: expected {ann}")
        pairs.append((img, ann))
    return pairs


# 8-bit colour or grey modes an RGB conversion reads faithfully; 16/32-bit and float images
# ("I", "I;16", "F") would be clipped to [0, 255] without a word, so they are refused.
IMAGE_MODES = ("RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1")
LABEL_MODES = ("L", "P")


def _open(path: str | Path, what: str) -> Image.Image:
    """``Image.open`` with corrupt, empty and non-image files reported as one line naming them."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{what} {path} is an empty file")
    try:
        return Image.open(path)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (OSError, SyntaxError, ValueError) as err:  # UnidentifiedImageError is an OSError
        raise UserError(f"{what} {path} is not a readable image ({type(err).__name__})") from None


def _decode(im: Image.Image, path: str | Path, what: str) -> np.ndarray:
    try:
        return np.asarray(im)
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt pixel data
        raise UserError(f"{what} {path} is truncated or corrupt ({err})") from None


def _check_mode(im: Image.Image, path: str | Path, what: str, modes: Sequence[str]) -> None:
    if im.mode not in modes:
        expected = "an 8-bit single-channel PNG" if what == "label" else "an 8-bit image"
        raise UserError(f"{what} {path} has mode {im.mode}; expected {expected}")


def read_image(path: str | Path) -> np.ndarray:
    """RGB image as an (H, W, 3) uint8 array.

    Raises :class:`labcore.cli.UserError` naming the file when it is empty, not an image,
    truncated, or not 8-bit (modes outside :data:`IMAGE_MODES`)."""
    with _open(path, "image") as im:
        _check_mode(im, path, "image", IMAGE_MODES)
        if im.mode != "RGB":
            try:
                im = im.convert("RGB")
            except (OSError, SyntaxError, ValueError) as err:
                raise UserError(f"image {path} is truncated or corrupt ({err})") from None
        return _decode(im, path, "image")


def read_label(path: str | Path, reduce_zero_label: bool = False) -> np.ndarray:
    """Label map, (H, W) uint8; ``reduce_zero_label``: 0 -> 255, k -> k - 1, 255 stays.

    Raises :class:`labcore.cli.UserError` naming the file when it is empty, not an image,
    truncated, or not single-channel 8-bit (mode L or P)."""
    with _open(path, "label") as im:
        _check_mode(im, path, "label", LABEL_MODES)
        lab = _decode(im, path, "label").astype(np.uint8)
    if reduce_zero_label:
        lab = lab.copy()
        lab[lab == 0] = IGNORE
        lab = lab - 1
        lab[lab == IGNORE - 1] = IGNORE
    return lab


def check_pairs(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Open every (image, label) header once: empty, unreadable, wrong-mode files and label maps
    whose size differs from their image's are a :class:`labcore.cli.UserError` naming the file,
    before any training starts. Only headers are read (cheap); truncated pixel data is caught
    when a file is decoded (:func:`read_image`, :func:`read_label`)."""
    for img_path, ann_path in pairs:
        with _open(img_path, "image") as im:
            _check_mode(im, img_path, "image", IMAGE_MODES)
            img_size = im.size
        with _open(ann_path, "label") as lab:
            _check_mode(lab, ann_path, "label", LABEL_MODES)
            lab_size = lab.size
        if img_size != lab_size:
            raise UserError(
                f"label {ann_path} is {lab_size[0]}x{lab_size[1]} but its image {img_path} is "
                f"{img_size[0]}x{img_size[1]} (width x height)"
            )


def pixel_counts(
    label_paths: Sequence[str | Path], num_classes: int, reduce_zero_label: bool = False
) -> np.ndarray:
    """Training pixels per class, (K,) int64: one ``np.bincount`` (minlength K+1) per file, with
    ignore and out-of-range labels sent to the extra bin K, which is dropped."""
    total = np.zeros(num_classes + 1, dtype=np.int64)
    for p in label_paths:
        lab = read_label(p, reduce_zero_label).astype(np.int64).ravel()
        total += np.bincount(np.minimum(lab, num_classes), minlength=num_classes + 1)
    return total[:num_classes]


class _ItemRNG:
    """Augmentation randomness keyed by (seed, item index, epoch), not by a stream shared across
    items: an item is augmented the same way whichever process, worker or batch loads it, so a
    run split over ranks sees the samples of one process. The training loop calls
    :meth:`set_epoch` (as it does on its ``DistributedSampler``) to draw new augmentations."""

    seed: int
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rng_for(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed % 2**63, int(i), int(self.epoch)])


def normalize(image: Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Tensor:
    """(C, H, W) or (B, C, H, W) uint8/float in [0, 255] -> float32 standardised per channel."""
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (image.float() - m) / s


def _resize_pair(img: Tensor, lab: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    img = F.interpolate(img[None].float(), size, mode="bilinear", align_corners=False)[0]
    lab = F.interpolate(lab[None, None].float(), size, mode="nearest")[0, 0].to(torch.uint8)
    return img, lab


def _random_crop(lab: Tensor, crop: int, rng: np.random.Generator, cat_max_ratio: float):
    """mmseg RandomCrop: up to 10 tries for a crop where no class covers > cat_max_ratio."""
    h, w = lab.shape
    for _ in range(10):
        y = int(rng.integers(max(h - crop, 0) + 1))
        x = int(rng.integers(max(w - crop, 0) + 1))
        if cat_max_ratio >= 1.0:
            break
        cnt = torch.bincount(lab[y : y + crop, x : x + crop].reshape(-1).long(), minlength=256)
        cnt = cnt[:IGNORE]
        if (cnt > 0).sum() > 1 and cnt.max() / cnt.sum() < cat_max_ratio:
            break
    return y, x


class FolderSegmentation(_ItemRNG, Dataset):
    """A dataset in one of the :data:`LAYOUTS`, read from disk.

    ``train=True``: mmseg's training pipeline without PhotoMetricDistortion — rescale to fit
    ``scale`` times a ratio in ``ratio_range``, RandomCrop(``crop``, cat_max_ratio 0.75), flip 0.5,
    Normalize, Pad (0 / 255), then ``bank`` if given (a :class:`aucseg.TMemoryBank`).
    ``train=False``: the whole image rescaled to fit ``scale``, the label at full size.
    ``check=True`` opens every file's header at construction (:func:`check_pairs`), so a bad file
    is reported before any work.

    Items: (image float32 (3, H, W), label int64 (H, W)).
    """

    def __init__(
        self,
        root: str | Path,
        layout: str,
        split: str = "train",
        *,
        train: bool = True,
        crop: int = 512,
        scale: tuple[int, int] = (2048, 512),
        ratio_range: tuple[float, float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        bank: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
        seed: int = 0,
        check: bool = True,
    ):
        if not isinstance(crop, int) or crop < 1:
            raise UserError(f"crop must be a positive integer, got {crop!r}")
        if len(scale) != 2 or min(scale) < 1:
            raise UserError(f"scale must be two positive integers, got {scale!r}")
        lo, hi = ratio_range
        if not 0 < lo <= hi:
            raise UserError(f"ratio_range must satisfy 0 < low <= high, got {ratio_range!r}")
        if not 0 < cat_max_ratio <= 1:
            raise UserError(f"cat_max_ratio must lie in (0, 1], got {cat_max_ratio!r}")
        self.layout = get_layout(layout)
        self.pairs = find_pairs(root, layout, split)
        if check:
            check_pairs(self.pairs)
        self.train, self.crop, self.scale, self.ratio_range = train, crop, scale, ratio_range
        self.cat_max_ratio, self.bank = cat_max_ratio, bank
        self.seed = seed

    @property
    def num_classes(self) -> int:
        return self.layout.num_classes

    def __len__(self) -> int:
        return len(self.pairs)

    def _fit_scale(self, h: int, w: int, ratio: float) -> tuple[int, int]:
        long_side, short_side = max(self.scale) * ratio, min(self.scale) * ratio
        f = min(long_side / max(h, w), short_side / min(h, w))
        return max(1, round(h * f)), max(1, round(w * f))

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        img_path, ann_path = self.pairs[i]
        img = torch.from_numpy(read_image(img_path).copy()).permute(2, 0, 1)
        lab = torch.from_numpy(read_label(ann_path, self.layout.reduce_zero_label).copy())
        if img.shape[1:] != lab.shape:
            raise UserError(f"image {img_path} and label {ann_path} differ in size")
        if not self.train:
            img, _ = _resize_pair(img, lab, self._fit_scale(*lab.shape, 1.0))
            return normalize(img), lab.long()
        rng = self._rng_for(i)
        ratio = float(rng.uniform(*self.ratio_range))
        img, lab = _resize_pair(img, lab, self._fit_scale(*lab.shape, ratio))
        y, x = _random_crop(lab, self.crop, rng, self.cat_max_ratio)
        img, lab = (
            img[:, y : y + self.crop, x : x + self.crop],
            lab[y : y + self.crop, x : x + self.crop],
        )
        if rng.random() < 0.5:
            img, lab = img.flip(-1), lab.flip(-1)
        img = normalize(img)
        ph, pw = self.crop - lab.shape[0], self.crop - lab.shape[1]
        img = F.pad(img, (0, pw, 0, ph), value=0.0)
        lab = F.pad(lab, (0, pw, 0, ph), value=IGNORE).long()
        if self.bank is not None:
            img, lab = self.bank(img, lab)
        return img, lab


class TensorSegmentation(_ItemRNG, Dataset):
    """An in-memory dataset of uint8 images (N, 3, H, W) and labels (N, H, W).

    Items are normalised; with ``train=True`` a random horizontal flip and then ``bank``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        train: bool = False,
        bank: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
        seed: int = 0,
    ):
        if images.dim() != 4 or labels.shape != images.shape[:1] + images.shape[2:]:
            raise ValueError(
                f"images (N,3,H,W) and labels (N,H,W) expected, got "
                f"{tuple(images.shape)} and {tuple(labels.shape)}"
            )
        self.images, self.labels, self.train, self.bank = images, labels, train, bank
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        img, lab = self.images[i], self.labels[i]
        if self.train and self._rng_for(i).random() < 0.5:
            img, lab = img.flip(-1), lab.flip(-1)
        img, lab = normalize(img), lab.long()
        if self.train and self.bank is not None:
            img, lab = self.bank(img, lab)
        return img, lab
