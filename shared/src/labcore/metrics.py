"""Metrics that two or more methods share: top-k accuracy, ROC-AUC, mIoU, calibration.

All functions accept numpy arrays or torch tensors and are vectorised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "ConfusionMatrix",
    "expected_calibration_error",
    "mean_iou",
    "roc_auc",
    "topk_accuracy",
]


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def topk_accuracy(logits, targets, topk: Sequence[int] = (1,)) -> list[float]:
    """Fraction of rows whose target is among the ``k`` highest logits, for each ``k``.

    ``logits``: (N, C); ``targets``: (N,) class indices.
    """
    logits = torch.as_tensor(logits)
    targets = torch.as_tensor(targets).reshape(-1, 1)
    if logits.ndim != 2 or logits.shape[0] != targets.shape[0]:
        raise ValueError(f"expected logits (N, C) and targets (N,), got {tuple(logits.shape)}")
    kmax = min(max(topk), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices
    hits = (pred == targets).float()
    return [hits[:, : min(k, kmax)].sum(1).mean().item() for k in topk]


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their average rank (like ``scipy.stats.rankdata``)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # rank of the last member of each tie group
    return (upper - (counts - 1) / 2.0)[inverse]


def roc_auc(scores, labels) -> float:
    r"""Area under the ROC curve for binary ``labels`` (1 = positive), ties counted as 1/2.

    Mann-Whitney form: :math:`\mathrm{AUC} = (R_+ - n_+(n_+ + 1)/2) / (n_+ n_-)` with
    :math:`R_+` the sum of the positives' average ranks. Equals scikit-learn's ``roc_auc_score``.
    Ranks do not merge as sums: under ``torchrun`` gather scores and labels first
    (``labcore.dist.all_gather_cat``), then call this once.
    """
    s = _numpy(scores).astype(np.float64).ravel()
    y = _numpy(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in size: {s.shape} vs {y.shape}")
    pos = y.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both positive and negative labels")
    rank_sum = average_ranks(s)[pos].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class ConfusionMatrix:
    """Dataset-level confusion matrix for segmentation or classification (mmseg convention).

    ``matrix[t, p]`` counts pixels of target class ``t`` predicted as ``p``. Intersections and
    unions are summed over the whole dataset before dividing; classes whose union is zero give
    ``nan`` and are left out of the mean (``nanmean``). Pixels equal to ``ignore_index`` (or
    outside ``[0, num_classes)``) are ignored.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        if num_classes < 1:
            raise ValueError("num_classes must be positive")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred, target) -> ConfusionMatrix:
        pred = torch.as_tensor(pred).reshape(-1).long()
        target = torch.as_tensor(target).reshape(-1).long().to(pred.device)
        if pred.shape != target.shape:
            raise ValueError(f"pred and target differ in size: {pred.numel()} vs {target.numel()}")
        k = self.num_classes
        valid = (target >= 0) & (target < k)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        counts = torch.bincount(target[valid] * k + pred[valid].clamp(0, k - 1), minlength=k * k)
        self.matrix += counts.reshape(k, k).cpu().numpy()
        return self

    def reset(self) -> None:
        self.matrix[:] = 0

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrix over ``torch.distributed`` ranks (a no-op in one process).

        Counts are summed exactly (int64), so the merged mIoU equals the single-process one
        whatever the split of the data over ranks.
        """
        from labcore import dist

        if dist.world_size() > 1:
            t = torch.from_numpy(self.matrix.copy()).to(dist._reduce_device())
            self.matrix = dist.all_reduce(t).cpu().numpy()
        return self

    def iou(self) -> np.ndarray:
        """Per-class IoU = TP / (TP + FP + FN); ``nan`` where the class never occurs."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")


def mean_iou(pred, target, num_classes: int, ignore_index: int | None = 255) -> float:
    """Dataset-level mIoU of one batch of predictions (see :class:`ConfusionMatrix`)."""
    return ConfusionMatrix(num_classes, ignore_index).update(pred, target).miou()


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    r"""ECE with equal-width confidence bins: :math:`\sum_b \frac{|B_b|}{N} |acc(B_b) - conf(B_b)|`.

    ``probs``: (N, C) class probabilities; confidence is the max probability, bins are
    ``(i/n_bins, (i+1)/n_bins]`` as in Guo et al. (2017).
    """
    p = _numpy(probs).astype(np.float64)
    y = _numpy(labels).ravel()
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"expected probs (N, C) and labels (N,), got {p.shape} and {y.shape}")
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    gap = np.bincount(bins, weights=correct - conf, minlength=n_bins)
    return float(np.abs(gap).sum() / len(y))
