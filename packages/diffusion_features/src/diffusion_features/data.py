"""Data: the synthetic shapes scenes (offline demo), image folders, and the two real layouts.

- :func:`synthetic_shapes`: 64² RGB scenes, background + a red disk (class 1) + a blue square
  (class 2) at random positions and sizes, Gaussian pixel noise; seeded. All-background
  prediction scores mIoU ≈ 0.275 on them. A stand-in, not a dataset of the papers.
- :func:`list_images` / :func:`load_image`: a folder of images; undecodable files and empty
  folders are :class:`~labcore.cli.UserError` naming the path.
- :func:`load_ddpm_seg`: the DDPM-segmentation layout (Horse-21, Bedroom-28): ``<split>/`` with
  ``<stem>.png|jpg`` images and ``<stem>.npy`` integer label maps beside them.
- :func:`load_spair_pairs`: SPair-71k (``PairAnnotation/<split>/*.json`` with ``src_imname``,
  ``trg_imname``, ``category``, ``src_kps``, ``trg_kps``, ``src_bndbox``, ``trg_bndbox``;
  images in ``JPEGImages/<category>/``). ``limit=360`` takes a seeded 360-pair subset of val;
  DHF's exact val-360 list is not shipped here (give it with ``pair_list``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from labcore.cli import UserError

__all__ = [
    "IMAGE_SUFFIXES",
    "list_images",
    "load_ddpm_seg",
    "load_image",
    "load_spair_pairs",
    "synthetic_shapes",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def synthetic_shapes(n: int, size: int = 64, noise: float = 0.05, seed: int = 0):
    """``n`` scenes: images (n, 3, size, size) in [0, 1] and labels (n, size, size) in {0,1,2}."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.empty((n, 3, size, size), np.float32)
    labels = np.zeros((n, size, size), np.int64)
    for i in range(n):
        bg = rng.uniform(0.35, 0.65, 3)
        img = np.broadcast_to(bg[:, None, None], (3, size, size)).copy()
        r = rng.uniform(0.12, 0.22) * size
        cx, cy = rng.uniform(r, size - r, 2)
        disk = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        s = rng.uniform(0.2, 0.35) * size
        x0, y0 = rng.uniform(0, size - s, 2)
        square = (xx >= x0) & (xx < x0 + s) & (yy >= y0) & (yy < y0 + s)
        img[:, disk] = np.array([0.85, 0.15, 0.15])[:, None]
        img[:, square] = np.array([0.15, 0.2, 0.85])[:, None]  # the square is drawn on top
        labels[i][disk] = 1
        labels[i][square] = 2
        images[i] = np.clip(img + rng.normal(0, noise, img.shape), 0, 1)
    return torch.from_numpy(images), torch.from_numpy(labels)


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files of ``folder``; UserError if it is missing or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no image directory {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def load_image(path: str | Path):
    """An RGB PIL image; UserError naming the file if it does not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"cannot decode image {path}: {e}") from None


def load_ddpm_seg(folder: str | Path, size: int | None = None):
    """Images (N, 3, H, W) in [0, 1] and labels (N, H, W) from the DDPM-segmentation layout.

    Every image needs ``<stem>.npy`` beside it (an integer (H, W) array matching the image);
    ``size`` resizes both (nearest for labels)."""
    from PIL import Image

    files = list_images(folder)
    images, labels = [], []
    for f in files:
        lab_path = f.with_suffix(".npy")
        if not lab_path.is_file():
            raise UserError(f"no label file {lab_path} for image {f}")
        try:
            lab = np.load(lab_path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"cannot read label file {lab_path}: {e}") from None
        im = load_image(f)
        if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
            raise UserError(
                f"label file {lab_path} must hold an integer (H, W) array, "
                f"got {lab.dtype} {lab.shape}"
            )
        if lab.shape != (im.height, im.width):
            raise UserError(
                f"label {lab_path} is {lab.shape}, image {f} is {(im.height, im.width)}"
            )
        if size:
            im = im.resize((size, size), Image.BICUBIC)
            lab = np.asarray(
                Image.fromarray(lab.astype(np.int32)).resize((size, size), Image.NEAREST)
            )
        images.append(np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0)
        labels.append(lab.astype(np.int64))
    shapes = {x.shape for x in images}
    if len(shapes) > 1:
        raise UserError(f"images in {folder} differ in size ({sorted(shapes)}); pass a size")
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels)), files


def load_spair_pairs(
    root: str | Path,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    pair_list: str | Path | None = None,
) -> list[dict]:
    """SPair-71k pairs as dicts (paths, category, keypoints (K, 2) x/y, bboxes x0 y0 x1 y1)."""
    root = Path(root)
    ann = root / "PairAnnotation" / split
    if not ann.is_dir():
        raise FileNotFoundError(f"no SPair-71k annotation folder {ann}")
    files = sorted(ann.glob("*.json"))
    if pair_list is not None:
        names = [s.strip() for s in Path(pair_list).read_text().splitlines() if s.strip()]
        wanted = {n if n.endswith(".json") else n + ".json" for n in names}
        files = [f for f in files if f.name in wanted]
    elif limit is not None and len(files) > limit:
        rng = np.random.default_rng(seed)
        files = [files[i] for i in sorted(rng.choice(len(files), limit, replace=False))]
    if not files:
        raise UserError(f"no pair files in {ann}")
    pairs = []
    for f in files:
        try:
            a = json.loads(f.read_text())
            cat = a["category"]
            pairs.append(
                {
                    "name": f.stem,
                    "category": cat,
                    "src": root / "JPEGImages" / cat / a["src_imname"],
                    "trg": root / "JPEGImages" / cat / a["trg_imname"],
                    "src_kps": torch.tensor(a["src_kps"], dtype=torch.float32).reshape(-1, 2),
                    "trg_kps": torch.tensor(a["trg_kps"], dtype=torch.float32).reshape(-1, 2),
                    "src_bbox": torch.tensor(a["src_bndbox"], dtype=torch.float32),
                    "trg_bbox": torch.tensor(a["trg_bndbox"], dtype=torch.float32),
                }
            )
        except (json.JSONDecodeError, KeyError, TypeError, RuntimeError, ValueError) as e:
            raise UserError(f"bad SPair pair file {f}: {type(e).__name__}: {e}") from None
        if len(pairs[-1]["src_kps"]) != len(pairs[-1]["trg_kps"]):
            raise UserError(f"bad SPair pair file {f}: src and trg keypoint counts differ")
    return pairs
