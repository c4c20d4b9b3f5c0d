"""The Tail-classes Memory Bank (T-Memory Bank) of AUCSeg, as a per-sample transform.

The bank holds, for each tail class, a random-replacement buffer of at most ``memory_size``
(S_M) objects. Called on one training sample (the last step of the pipeline, after
normalisation and cropping) it

1. **stores** every tail class present in the sample: an entry is appended while the class has
   fewer than S_M entries, otherwise it overwrites a uniformly drawn slot;
2. **pastes** absent tail classes: of the set A of tail classes absent from the sample,
   ``ceil(p_sample · |A|)`` are drawn uniformly without replacement (those with an empty bank are
   skipped). For each, a random stored object is scaled by ``p_resize`` together with its source
   canvas (image bilinear, mask nearest), the scaled canvas is placed at an offset drawn uniformly
   so that it fits inside the sample, and image and label are overwritten only on the object's
   pixels. Pastes are applied in turn, so a later one may cover an earlier one.

An entry is a *copy* of the object's bounding-box crop plus its position in the source image,
so the paste lands at ``position · p_resize + U[0, H - H_src · p_resize]``, the placement the
official whole-canvas resize gives, at a fraction of the host memory. With ``p_resize = 1``
the object lands where it was in its source image.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from labcore.cli import UserError

__all__ = ["BankEntry", "TMemoryBank"]


@dataclass(frozen=True)
class BankEntry:
    """One stored tail object: its bbox crop (C, h, w), its (h, w) bool mask, where it was."""

    image: Tensor
    mask: Tensor
    top: int
    left: int
    source_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.image.numel() * self.image.element_size() + self.mask.numel()


class TMemoryBank:
    """Per-sample transform ``(image (C, H, W), label (H, W)) -> (image, label)``; see module doc.

    Args:
        num_classes: K (labels outside [0, K) such as 255 are never stored).
        tail_classes: the bank's tail ids (``small_index`` in the official configs).
        memory_size: S_M, capacity per class (5 in every official config).
        p_sample: fraction of the absent tail classes pasted per sample (ADE/COCO 0.05, City 1.0).
        p_resize: scale applied to a stored object and its source canvas (ADE 0.4, COCO 0.1,
            City 1.0).
        seed: seeds the bank's own generator; ``None`` uses ``torch.initial_seed()``. Inside a
            ``DataLoader`` worker the worker id is mixed in, so every worker owns a separate bank
            with its own stream, as in the official pipeline; under ``torchrun`` the rank too
            (one bank per process, as in mmseg's multi-GPU runs).

    The input tensors are not modified; new tensors are returned.
    """

    def __init__(
        self,
        num_classes: int,
        tail_classes: Iterable[int],
        memory_size: int = 5,
        p_sample: float = 1.0,
        p_resize: float = 1.0,
        seed: int | None = None,
    ):
        tail = sorted({int(c) for c in tail_classes})
        if not tail:
            raise UserError("tail_classes is empty")
        if tail[0] < 0 or tail[-1] >= num_classes:
            raise UserError(f"tail class ids must lie in [0, {num_classes}), got {tail}")
        if memory_size < 1:
            raise UserError(f"memory_size must be an integer >= 1, got {memory_size!r}")
        if not 0.0 <= p_sample <= 1.0:
            raise UserError(f"p_sample must lie in [0, 1], got {p_sample}")
        if not 0.0 < p_resize <= 1.0:
            raise UserError(f"p_resize must lie in (0, 1], got {p_resize}")
        self.num_classes, self.tail_classes = num_classes, tail
        self.memory_size, self.p_sample, self.p_resize = memory_size, p_sample, p_resize
        self.seed = seed
        self.banks: dict[int, list[BankEntry]] = {c: [] for c in tail}
        self._is_tail = torch.zeros(num_classes, dtype=torch.bool)
        self._is_tail[tail] = True
        self._rng: np.random.Generator | None = None

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            worker = torch.utils.data.get_worker_info()
            base = self.seed if self.seed is not None else torch.initial_seed()
            dist = torch.distributed
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            self._rng = np.random.default_rng([base % 2**63, worker.id if worker else 0, rank])
        return self._rng

    def __len__(self) -> int:
        return sum(len(v) for v in self.banks.values())

    @property
    def nbytes(self) -> int:
        """Host bytes held by the stored crops and masks."""
        return sum(e.nbytes for v in self.banks.values() for e in v)

    def __repr__(self) -> str:
        return (
            f"TMemoryBank(tail={len(self.tail_classes)} classes, memory_size={self.memory_size}, "
            f"p_sample={self.p_sample}, p_resize={self.p_resize}, stored={len(self)})"
        )

    def _present_tail(self, label: Tensor) -> list[int]:
        k = self.num_classes
        lab = label.reshape(-1).long()
        counts = torch.bincount(torch.where((lab >= 0) & (lab < k), lab, k), minlength=k + 1)
        return torch.nonzero((counts[:k] > 0) & self._is_tail).squeeze(1).tolist()

    def store(self, image: Tensor, label: Tensor, classes: Iterable[int]) -> None:
        """Store a copy of each listed class's object (bbox crop, mask, position)."""
        for c in classes:
            mask = label == c
            rows = torch.nonzero(mask.any(1)).squeeze(1)
            cols = torch.nonzero(mask.any(0)).squeeze(1)
            t, b, l, r = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            entry = BankEntry(
                image[:, t:b, l:r].clone(), mask[t:b, l:r].clone(), t, l, tuple(label.shape)
            )
            bank = self.banks[c]
            if len(bank) < self.memory_size:
                bank.append(entry)
            else:  # random replacement: a uniformly drawn slot
                bank[int(self.rng.integers(self.memory_size))] = entry

    def paste(self, image: Tensor, label: Tensor, entry: BankEntry, cls: int) -> None:
        """Paste one entry in place, scaled by ``p_resize`` at a uniform offset."""
        s, (h_img, w_img) = self.p_resize, label.shape
        obj, mask = entry.image, entry.mask
        if s != 1.0:
            size = (max(1, round(mask.shape[0] * s)), max(1, round(mask.shape[1] * s)))
            obj = F.interpolate(obj[None].float(), size, mode="bilinear", align_corners=False)[0]
            mask = F.interpolate(mask[None, None].float(), size, mode="nearest")[0, 0] > 0.5
        # the scaled source canvas is placed at a uniform offset so that it fits the sample
        canvas_h, canvas_w = round(entry.source_size[0] * s), round(entry.source_size[1] * s)
        oy = int(self.rng.integers(max(h_img - canvas_h, 0) + 1))
        ox = int(self.rng.integers(max(w_img - canvas_w, 0) + 1))
        y0, x0 = oy + math.floor(entry.top * s), ox + math.floor(entry.left * s)
        h, w = min(mask.shape[0], h_img - y0), min(mask.shape[1], w_img - x0)
        if h <= 0 or w <= 0:
            return
        mask = mask[:h, :w]
        region = image[:, y0 : y0 + h, x0 : x0 + w]
        region[:, mask] = obj[:, :h, :w][:, mask].to(image.dtype)
        label[y0 : y0 + h, x0 : x0 + w][mask] = cls

    def __call__(self, image: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        squeeze = label.dim() == 3
        if squeeze:
            label = label[0]
        if image.dim() != 3 or label.shape != image.shape[1:]:
            raise ValueError(
                f"expected image (C, H, W) and label (H, W), got {tuple(image.shape)} and "
                f"{tuple(label.shape)}"
            )
        present = self._present_tail(label)
        self.store(image, label, present)
        absent = sorted(set(self.tail_classes) - set(present))
        n_draw = math.ceil(self.p_sample * len(absent))
        if n_draw:
            image, label = image.clone(), label.clone()
            for c in self.rng.choice(absent, size=n_draw, replace=False).tolist():
                bank = self.banks[c]
                if bank:  # an absent class whose bank is still empty is skipped
                    self.paste(image, label, bank[int(self.rng.integers(len(bank)))], c)
        return image, label[None] if squeeze else label
