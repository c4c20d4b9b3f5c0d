"""A seeded, procedurally generated long-tailed scene set (a stand-in, not a paper dataset).

K = 10 classes on S×S RGB scenes (S = 96 by default), painted in this order:

* head "stuff" (0 sky, 1 ground, 2 wall): a tilted horizon splits sky from ground; a wall
  rectangle (70% of images) rises from the bottom edge; smooth gradients plus noise;
* middle (3, 4, 5): one ellipse each (radii 8–16 px) with image presence 60%, 45%, 30%;
* tail (6 disc, 7 triangle, 8 cross, 9 ring; radius 3–7 px) with image presence
  q = 8%, 5%, 3%, 2%; under 0.3% of all pixels together.

Every class has its own hue and texture; per-object colour jitter and per-pixel noise make the
colours overlap (a tail shape can share its colour range with a head or middle class), so shape
and context matter. Everything is drawn in vectorised numpy from ``np.random.default_rng``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

__all__ = ["CLASS_NAMES", "TAIL_PRESENCE", "SyntheticScenes", "make_scenes", "make_synthetic"]

CLASS_NAMES = (
    "sky",
    "ground",
    "wall",
    "tree",
    "car",
    "person",
    "disc",
    "triangle",
    "cross",
    "ring",
)
MIDDLE_PRESENCE = (0.60, 0.45, 0.30)
TAIL_PRESENCE = (0.08, 0.05, 0.03, 0.02)
# class colours (RGB); tail colours sit near head / middle ones on purpose
_COLOURS = np.array(
    [
        (110, 160, 220),
        (120, 100, 60),
        (150, 150, 150),  # sky, ground, wall
        (60, 140, 60),
        (180, 50, 50),
        (200, 170, 140),  # tree, car, person
        (215, 175, 120),
        (170, 70, 120),
        (90, 170, 210),
        (175, 175, 175),  # disc .. ring
    ],
    dtype=np.float32,
)
_NOISE = 22.0  # per-pixel colour noise (std)
_JITTER = 25.0  # per-object colour jitter (std)


@dataclass
class SyntheticScenes:
    """Images (N, 3, S, S) uint8, labels (N, S, S) uint8, and the per-class pixel counts."""

    images: Tensor
    labels: Tensor
    pixel_counts: np.ndarray = field(repr=False)

    @property
    def presence(self) -> np.ndarray:
        """Image-level presence rate of each class, (K,)."""
        k = len(CLASS_NAMES)
        lab = self.labels.reshape(len(self.labels), -1).long()
        hits = torch.zeros(len(lab), k + 1, dtype=torch.bool)
        hits.scatter_(1, lab.clamp(max=k), True)
        return hits[:, :k].float().mean(0).numpy()


def _scenes_chunk(rng: np.random.Generator, n: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    yy, xx = yy[None], xx[None]  # (1, S, S)

    def u(lo, hi):
        return rng.uniform(lo, hi, size=(n, 1, 1)).astype(np.float32)

    label = np.zeros((n, s, s), dtype=np.uint8)
    # head: sky above a tilted horizon, ground below, sometimes a wall from the bottom edge
    horizon = u(0.3 * s, 0.6 * s) + u(-0.2, 0.2) * (xx - s / 2)
    label[yy >= horizon] = 1
    wall_w, wall_top = u(0.25 * s, 0.5 * s), u(0.1 * s, 0.45 * s)
    wall_x0 = np.where(rng.random((n, 1, 1)) < 0.5, 0.0, s - wall_w)
    wall = (xx >= wall_x0) & (xx < wall_x0 + wall_w) & (yy >= wall_top)
    label[wall & (rng.random((n, 1, 1)) < 0.7)] = 2
    # middle: ellipses
    for c, q in zip((3, 4, 5), MIDDLE_PRESENCE):
        ry, rx = u(8, 16), u(8, 16)
        cy, cx = u(16, s - 16), u(16, s - 16)
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        label[blob & (rng.random((n, 1, 1)) < q)] = c
    # tail: small shapes
    for c, q in zip((6, 7, 8, 9), TAIL_PRESENCE):
        r = u(3, 7)
        dy, dx = yy - u(8, s - 8), xx - u(8, s - 8)
        d = np.sqrt(dy**2 + dx**2)
        if c == 6:
            shape = d <= r
        elif c == 7:  # triangle, apex up: base at dy = r/2
            shape = (dy <= r / 2) & (np.abs(dx) <= 0.577 * (dy + r))
        elif c == 8:
            arm = np.maximum(r / 3, 1.0)
            shape = ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | (
                (np.abs(dy) <= arm) & (np.abs(dx) <= r)
            )
        else:
            shape = (d <= r) & (d >= 0.5 * r)
        label[shape & (rng.random((n, 1, 1)) < q)] = c

    # colours: class colour + per-object jitter + class texture + pixel noise
    k = len(CLASS_NAMES)
    base = _COLOURS[None] + rng.normal(0, _JITTER, size=(n, k, 3)).astype(np.float32)  # (n,K,3)
    img = base[np.arange(n)[:, None, None], label]  # (n, S, S, 3)
    texture = np.stack(
        [
            0.25 * (yy[0] - s / 2),  # sky: vertical gradient
            8 * np.sin(xx[0] / 3.0) * np.sin(yy[0] / 5.0),  # ground: soft pattern
            12 * ((yy[0] // 4) % 2),  # wall: horizontal courses
            10 * np.sin(xx[0] + yy[0]),  # tree: fine leaves
            np.zeros((s, s), np.float32),  # car: flat
            6 * np.cos(yy[0] / 2.0),  # person
            np.zeros((s, s), np.float32),  # disc
            10 * np.sin(xx[0] * 1.5),  # triangle: stripes
            np.zeros((s, s), np.float32),  # cross
            12 * ((xx[0] + yy[0]) % 2),  # ring: checker
        ]
    ).astype(np.float32)
    rows, cols = np.mgrid[0:s, 0:s]
    img += texture[label, rows, cols][..., None]
    img += rng.normal(0, _NOISE, size=img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    return img, label


def make_scenes(n: int, size: int = 96, seed: int = 0, chunk: int = 256) -> SyntheticScenes:
    """Generate ``n`` scenes of ``size``² pixels from ``seed`` (deterministic)."""
    if n < 1 or size < 32:
        raise ValueError("need n >= 1 and size >= 32")
    rng = np.random.default_rng(seed)
    parts = [_scenes_chunk(rng, min(chunk, n - i), size) for i in range(0, n, chunk)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    counts = np.bincount(labels.ravel(), minlength=len(CLASS_NAMES)).astype(np.int64)
    return SyntheticScenes(torch.from_numpy(images), torch.from_numpy(labels), counts)


def make_synthetic(
    n_train: int = 2000, n_val: int = 400, size: int = 96, seed: int = 0
) -> tuple[SyntheticScenes, SyntheticScenes]:
    """The demo's train and validation sets (independent streams of one seed)."""
    seeds = np.random.SeedSequence(seed).spawn(2)
    train = make_scenes(n_train, size, seed=int(seeds[0].generate_state(1)[0]))
    val = make_scenes(n_val, size, seed=int(seeds[1].generate_state(1)[0]))
    return train, val
