"""Datasets: ImageFolder and VTAB-1k list files (the paper's on-disk formats), and the offline
digits transfer task used by ``snell demo``.

VTAB-1k layout (as extracted by SSF / NOAH and read by the official SNELL code)::

    <root>/train800val200.txt    lines "<relative image path> <integer label>"
    <root>/test.txt              (also train800.txt / val200.txt)
    <root>/<images...>

ImageFolder layout: ``<root>/<split>/<class name>/<image>`` with split ``train`` / ``val`` /
``test`` (or class folders directly under ``<root>``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from labcore.cli import UserError

__all__ = [
    "VTAB_SPLITS",
    "DigitsTransfer",
    "VTABList",
    "detect_layout",
    "digits_transfer",
    "eval_transform",
    "load_split",
]

VTAB_SPLITS = {
    "train": "train800val200.txt",
    "test": "test.txt",
    "train800": "train800.txt",
    "val200": "val200.txt",
    "val": "val200.txt",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}


def eval_transform(img_size: int = 224):
    """VTAB protocol: direct (non-aspect-preserving) bicubic resize, ImageNet mean/std."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize((img_size, img_size), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
        ]
    )


class VTABList(Dataset):
    """A VTAB-1k split read from its list file; items are ``(image tensor, label)``."""

    def __init__(self, root: str | Path, split: str = "train", transform=None):
        root = Path(root)
        if split not in VTAB_SPLITS:
            raise UserError(f"unknown VTAB split {split!r}; choose one of {sorted(VTAB_SPLITS)}")
        list_file = root / VTAB_SPLITS[split]
        if not list_file.is_file():
            raise UserError(f"{root} has no {VTAB_SPLITS[split]} (VTAB-1k list-file layout)")
        self.root, self.transform = root, transform
        self.samples: list[tuple[Path, int]] = []
        for i, line in enumerate(list_file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise UserError(f"{list_file}:{i}: expected '<image path> <label>', got {line!r}")
            self.samples.append((root / parts[0], int(parts[1])))
        if not self.samples:
            raise UserError(f"{list_file} lists no images")
        missing = [p for p, _ in self.samples if not p.is_file()]
        if missing:
            raise UserError(
                f"{len(missing)} images listed in {list_file} are missing, e.g. {missing[0]}"
            )
        self.targets = [label for _, label in self.samples]
        self.classes = sorted(set(self.targets))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        with Image.open(path) as img:
            img = img.convert("RGB")
        return (self.transform(img) if self.transform else img), label


def detect_layout(root: str | Path) -> str:
    """``"vtab"`` if the VTAB list files are present, ``"imagefolder"`` if class folders are."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset directory not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"dataset path is not a directory: {root}")
    if (root / VTAB_SPLITS["train"]).is_file() or (root / VTAB_SPLITS["test"]).is_file():
        return "vtab"
    if any(p.is_dir() for p in root.iterdir()):
        return "imagefolder"
    raise UserError(
        f"{root} is neither a VTAB-1k folder (train800val200.txt, test.txt) nor an ImageFolder "
        "(<split>/<class>/<image>)"
    )


def _image_folder(root: Path, split: str, transform):
    from torchvision.datasets import ImageFolder

    folder = root / split if (root / split).is_dir() else root
    if folder == root and any((root / s).is_dir() for s in ("train", "val", "test")):
        raise UserError(f"{root} has no {split!r} split folder")
    classes = [p for p in folder.iterdir() if p.is_dir()]
    if not classes:
        raise UserError(f"{folder} has no class folders (ImageFolder layout <class>/<image>)")
    if not any(f.suffix.lower() in IMAGE_SUFFIXES for c in classes for f in c.iterdir()):
        raise UserError(f"{folder} has class folders but no images in them")
    return ImageFolder(str(folder), transform=transform, allow_empty=True)


def load_split(root: str | Path, split: str, img_size: int = 224, layout: str = "auto"):
    """A dataset of ``(image, label)`` for ``split`` in either layout, with the VTAB transform."""
    root = Path(root)
    layout = detect_layout(root) if layout == "auto" else layout
    transform = eval_transform(img_size)
    if layout == "vtab":
        return VTABList(root, split, transform)
    if layout == "imagefolder":
        return _image_folder(root, split, transform)
    raise UserError(f"unknown layout {layout!r}; choose auto, vtab or imagefolder")


class DigitsTransfer:
    """Tensors of the offline transfer task (see :func:`digits_transfer`)."""

    def __init__(self, **splits: tuple[torch.Tensor, torch.Tensor]):
        self.splits = splits

    def __getitem__(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.splits[name]


def digits_transfer(seed: int = 0, shots: int = 20, n_val: int = 50) -> DigitsTransfer:
    """Stand-in pretraining and transfer data from scikit-learn's shipped digits (offline).

    * source: digits 0-4, stratified 80/20 train/test split (for stand-in pretraining);
    * target: digits 5-9 relabelled 0-4, transposed and intensity-inverted (a domain shift);
      ``shots`` training images per class, ``n_val`` validation images, the rest test.
    Images are (N, 3, 32, 32) in [0, 1].
    """
    from labcore.data import load_digits_images, stratified_split

    X, y = load_digits_images(size=32, channels=3)
    src = (y < 5).nonzero().squeeze(1)
    tr, te = stratified_split(y[src].numpy(), [0.8, 0.2], seed=0)  # fixed backbone data
    tgt = (y >= 5).nonzero().squeeze(1)
    Xt = 1.0 - X[tgt].transpose(-1, -2)
    yt = y[tgt] - 5
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(yt))
    # first `shots` of each class in the permuted order; then val, then test
    ranks = np.empty(len(order), dtype=np.int64)
    for c in range(5):
        members = order[yt.numpy()[order] == c]
        ranks[members] = np.arange(len(members))
    train_idx = order[ranks[order] < shots]
    rest = order[ranks[order] >= shots]
    val_idx, test_idx = rest[:n_val], rest[n_val:]
    return DigitsTransfer(
        source_train=(X[src[tr]], y[src[tr]]),
        source_test=(X[src[te]], y[src[te]]),
        train=(Xt[train_idx], yt[train_idx]),
        val=(Xt[val_idx], yt[val_idx]),
        test=(Xt[test_idx], yt[test_idx]),
    )
