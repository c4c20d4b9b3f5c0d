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

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from labcore.cli import UserError

__all__ = [
    "VTAB_SPLITS",
    "CheckedImageFolder",
    "DigitsTransfer",
    "VTABList",
    "check_images",
    "detect_layout",
    "digits_transfer",
    "eval_transform",
    "load_split",
    "read_image",
]

VTAB_SPLITS = {
    "train": "train800val200.txt",
    "test": "test.txt",
    "train800": "train800.txt",
    "val200": "val200.txt",
    "val": "val200.txt",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}
# what PIL raises for files it cannot decode: unidentified / truncated / corrupt data
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
_HIGH_DEPTH = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


def _reason(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB of any PIL mode; 16-bit / 32-bit / float greyscale is rescaled to 8 bits first
    (``convert("RGB")`` would clip it to white)."""
    if img.mode in _HIGH_DEPTH:
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        top = float(arr.max()) if arr.size else 0.0
        if img.mode == "F" and top <= 1.0:  # float in [0, 1]
            arr = arr * 255.0
        elif top > 255.0:  # 16-bit range
            arr = arr / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    return img.convert("RGB")


def read_image(path: str | Path) -> Image.Image:
    """Decode ``path`` fully into an RGB image; an unreadable file is a :class:`UserError` naming
    it (empty, truncated, not an image, corrupt data)."""
    try:
        with Image.open(path) as img:
            img.load()
            return _to_rgb(img)
    except _DECODE_ERRORS as e:
        if isinstance(e, FileNotFoundError | PermissionError):
            raise
        raise UserError(f"unreadable image {path}: {_reason(e)}") from None


def _check_one(path: Path, decode: bool) -> str | None:
    """None if ``path`` opens as an image (header and, for PNG, checksums; with ``decode`` the
    whole image), else the reason."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        if decode:
            read_image(path)
        else:
            with Image.open(path) as img:
                img.verify()
    except UserError as e:
        return str(e).split(": ", 1)[-1]
    except _DECODE_ERRORS as e:
        return _reason(e)
    return None


def check_images(
    samples: list[tuple[Path, int]], where: str, skip_bad: bool = False
) -> tuple[list[tuple[Path, int]], int]:
    """Check every image of ``samples`` before any training, so a bad file stops the run at once.

    Default: a header check (``PIL.Image.verify``: not an image, empty, corrupt header; PNG
    checksums); a file that passes it and still fails to decode is reported by name when it is
    read. ``skip_bad=True`` decodes every image, drops the unreadable ones and prints how many
    (a warning on stderr), as the field's loaders do with a skip option.
    Returns (the kept samples, the number skipped); raises :class:`UserError` on the first bad
    file otherwise.
    """
    kept, bad = [], []
    for path, label in samples:
        reason = _check_one(Path(path), decode=skip_bad)
        if reason is None:
            kept.append((path, label))
        elif skip_bad:
            bad.append((path, reason))
        else:
            raise UserError(
                f"unreadable image {path}: {reason} (--skip-bad-images skips such files)"
            )
    if bad:
        from labcore import dist

        if dist.is_main():
            print(f"snell: warning: skipped {len(bad)} unreadable image(s) in {where}, e.g. "
                  f"{bad[0][0]}: {bad[0][1]}", file=sys.stderr)  # fmt: skip
    if not kept:
        raise UserError(f"{where}: no readable images")
    return kept, len(bad)


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

    def __init__(
        self, root: str | Path, split: str = "train", transform=None, skip_bad: bool = False
    ):
        root = Path(root)
        if split not in VTAB_SPLITS:
            raise UserError(f"unknown VTAB split {split!r}; choose one of {sorted(VTAB_SPLITS)}")
        list_file = root / VTAB_SPLITS[split]
        if not list_file.is_file():
            raise UserError(f"{root} has no {VTAB_SPLITS[split]} (VTAB-1k list-file layout)")
        self.root, self.transform = root, transform
        self.samples: list[tuple[Path, int]] = []
        try:
            text = list_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{list_file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise UserError(
                    f"{list_file}:{i}: expected '<image path> <label >= 0>', got {line!r}"
                )
            self.samples.append((root / parts[0], int(parts[1])))
        if not self.samples:
            raise UserError(f"{list_file} lists no images")
        missing = [p for p, _ in self.samples if not p.is_file()]
        if missing:
            raise UserError(
                f"{len(missing)} images listed in {list_file} are missing, e.g. {missing[0]}"
            )
        self.samples, self.skipped = check_images(self.samples, str(list_file), skip_bad)
        self.targets = [label for _, label in self.samples]
        self.classes = sorted(set(self.targets))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        img = read_image(path)
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


def CheckedImageFolder(folder: str | Path, transform=None, skip_bad: bool = False):
    """torchvision's ``ImageFolder`` read with :func:`read_image`, every file checked first
    (:func:`check_images`); ``.skipped`` holds how many were dropped with ``skip_bad``."""
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(folder), transform=transform, loader=read_image, allow_empty=True)
    ds.samples, ds.skipped = check_images(
        [(Path(p), t) for p, t in ds.samples], str(folder), skip_bad
    )
    ds.samples = [(str(p), t) for p, t in ds.samples]
    ds.imgs = ds.samples
    ds.targets = [t for _, t in ds.samples]
    return ds


def _image_folder(root: Path, split: str, transform, skip_bad: bool = False):
    folder = root / split if (root / split).is_dir() else root
    if folder == root and any((root / s).is_dir() for s in ("train", "val", "test")):
        raise UserError(f"{root} has no {split!r} split folder")
    classes = [p for p in folder.iterdir() if p.is_dir()]
    if not classes:
        raise UserError(f"{folder} has no class folders (ImageFolder layout <class>/<image>)")
    if not any(f.suffix.lower() in IMAGE_SUFFIXES for c in classes for f in c.iterdir()):
        raise UserError(f"{folder} has class folders but no images in them")
    return CheckedImageFolder(folder, transform, skip_bad)


def load_split(
    root: str | Path,
    split: str,
    img_size: int = 224,
    layout: str = "auto",
    skip_bad: bool = False,
):
    """A dataset of ``(image, label)`` for ``split`` in either layout, with the VTAB transform.

    Every image is checked before it is returned (:func:`check_images`): a bad file is a
    :class:`UserError` naming it, or, with ``skip_bad``, dropped and counted (``.skipped``).
    """
    root = Path(root)
    layout = detect_layout(root) if layout == "auto" else layout
    transform = eval_transform(img_size)
    if layout == "vtab":
        return VTABList(root, split, transform, skip_bad)
    if layout == "imagefolder":
        return _image_folder(root, split, transform, skip_bad)
    raise UserError(f"unknown layout {layout!r}; choose auto, vtab or imagefolder")


class DigitsTransfer:
    """Tensors of the offline transfer task (see :func:`digits_transfer`)."""

    def __init__(self, **splits: tuple[torch.Tensor, torch.Tensor]):
        self.splits = splits

    def __getitem__(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.splits[name]


def digits_transfer(
    seed: int = 0, shots: int = 20, n_val: int = 50, img_size: int = 32
) -> DigitsTransfer:
    """Stand-in pretraining and transfer data from scikit-learn's shipped digits (offline).

    * source: digits 0-4, stratified 80/20 train/test split (for stand-in pretraining);
    * target: digits 5-9 relabelled 0-4, transposed and intensity-inverted (a domain shift);
      ``shots`` training images per class, ``n_val`` validation images, the rest test.
    Images are (N, 3, img_size, img_size) in [0, 1].
    """
    from labcore.data import load_digits_images, stratified_split

    X, y = load_digits_images(size=img_size, channels=3)
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
