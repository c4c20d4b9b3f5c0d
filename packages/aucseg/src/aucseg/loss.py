r"""Pixel-level AUC loss of AUCSeg in closed form, and the total segmentation objective.

Scores are per-class sigmoids :math:`p_{m,c} = \sigma(z_{m,c})` (not a softmax). All valid pixels
of the mini-batch, across images, are pooled into one set of :math:`N` samples; :math:`N_c` holds
the pixels labelled :math:`c` and :math:`\mathcal{P}` the :math:`B_c` classes present in the batch.
The one-vs-one objective with surrogate :math:`\ell` is

.. math::

    L = \frac{s}{B_c (B_c - 1)} \sum_{i \ne j \in \mathcal{P}}
        \frac{1}{|N_i||N_j|} \sum_{m \in N_i} \sum_{n \in N_j} \ell(p_{m,i} - p_{n,i}),

where the pair for class :math:`i` always reads column :math:`i` ("is pixel m more class-i than
pixel n"). The one-vs-all objective puts every valid pixel not labelled :math:`i` on the negative
side, :math:`\bar N_i`, and *sums* the per-class terms, as the official code does (its factor is
1, not :math:`1/B_c`; ``ova_reduction="mean"`` divides by :math:`B_c`):

.. math::

    L_{ova} = s \sum_{i \in \mathcal{P}} \frac{1}{|N_i||\bar N_i|}
        \sum_{m \in N_i} \sum_{n \in \bar N_i} \ell(p_{m,i} - p_{n,i}).

No pixel pair is formed: every surrogate here separates into per-class means of
per-pixel functions, gathered with one ``index_add_`` in :math:`O(NK)`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AUCLoss", "SegmentationLoss", "auc_loss"]

Surrogate = Literal["square", "exp", "hinge"]
Transform = Literal["ovo", "ova"]
Scale = Literal["code", "paper"]
Reduction = Literal["sum", "mean"]

# The official SquareAUCLoss returns one half of the mean pair loss; exp returns the mean.
_CODE_SCALE = {"square": 0.5, "exp": 1.0, "hinge": 1.0}


def _flatten(logits: Tensor, target: Tensor, ignore_index: int | None) -> tuple[Tensor, Tensor]:
    """(B, K, H, W) logits and (B, H, W) labels -> (N, K) valid logits and (N,) labels."""
    if logits.dim() < 2:
        raise ValueError(f"logits must be (B, K, ...), got shape {tuple(logits.shape)}")
    k = logits.shape[1]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)} "
            "without the class axis; upsample the logits to the label size first"
        )
    z = logits.movedim(1, -1).reshape(-1, k)
    y = target.reshape(-1).long()
    valid = (y >= 0) & (y < k)
    if ignore_index is not None:
        valid &= y != ignore_index
    return z[valid], y[valid]


def _zero_like_graph(logits: Tensor) -> Tensor:
    """A scalar 0 attached to ``logits``' graph with a zero gradient, finite even when some
    logits are infinite (``logits.sum() * 0`` would be ``inf * 0 = nan``)."""
    return logits.reshape(-1)[:0].sum()


def _world_sum(x: Tensor, sync: bool) -> Tensor:
    """``x`` summed over every process of the default group when ``sync`` (autograd-aware:
    the backward sums the gradients back), else ``x``."""
    if not sync:
        return x
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x)


def _syncing(sync: bool) -> bool:
    dist = torch.distributed
    return sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _class_means(values: Tensor, y: Tensor, counts: Tensor, sync: bool = False) -> Tensor:
    """M[c, i] = mean of ``values[:, i]`` over the pixels of class c (0 for absent classes)."""
    k = values.shape[1]
    sums = _world_sum(values.new_zeros(k, k).index_add_(0, y, values), sync)
    return sums / counts.clamp(min=1).unsqueeze(1).to(values.dtype)


def _check_options(surrogate, transform, scale, ova_reduction, gamma) -> None:
    if surrogate not in _CODE_SCALE:
        raise ValueError(f"surrogate must be one of {sorted(_CODE_SCALE)}, got {surrogate!r}")
    if transform not in ("ovo", "ova"):
        raise ValueError(f"transform must be 'ovo' or 'ova', got {transform!r}")
    if scale not in ("code", "paper"):
        raise ValueError(f"scale must be 'code' or 'paper', got {scale!r}")
    if ova_reduction not in ("sum", "mean"):
        raise ValueError(f"ova_reduction must be 'sum' or 'mean', got {ova_reduction!r}")
    if not isinstance(gamma, int | float) or not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
    if surrogate == "hinge" and gamma < 1:
        raise ValueError("the closed-form hinge needs gamma >= 1 (then the clamp never binds)")


def auc_loss(
    logits: Tensor,
    target: Tensor,
    *,
    surrogate: Surrogate = "square",
    transform: Transform = "ovo",
    scale: Scale = "code",
    ova_reduction: Reduction = "sum",
    gamma: float = 1.0,
    ignore_index: int | None = 255,
    sync: bool = False,
) -> Tensor:
    r"""AUC loss of a segmentation batch (see the module docstring for the ovo objective).

    Args:
        logits: (B, K, H, W) raw scores at the label resolution (any trailing spatial shape works).
        target: (B, H, W) integer labels; ``ignore_index`` and labels outside [0, K) are dropped.
        surrogate: ``"square"`` :math:`(\gamma - t)^2` (all released configs), ``"exp"``
            :math:`e^{-\gamma t}`, or ``"hinge"`` :math:`\max(0, \gamma - t)`. For sigmoid scores
            :math:`t \in [-1, 1]`, so with :math:`\gamma \ge 1` the hinge never clips and equals the
            linear loss :math:`\gamma - t` exactly; that is the closed form used (the official
            HingeAUCLoss has an extra :math:`1/|N_i|` on its negative term, not copied).
        transform: ``"ovo"`` (one-vs-one over ordered pairs of present classes, the default) or
            ``"ova"`` (class i against all other valid pixels, for each present class i).
        scale: ``"code"`` multiplies the mean by the official factor (1/2 for square, 1 for exp and
            hinge), matching the released loss weights; ``"paper"`` is the exact mean.
        ova_reduction: how ``"ova"`` combines the B_c per-class terms: ``"sum"`` (the official
            code's scale, the default) or ``"mean"`` (1/B_c of it). Ignored for ``"ovo"``.
        gamma: margin :math:`\gamma` (1 in all configs).
        sync: under ``torch.distributed``, pool the pixels of *every* process's batch (the class
            counts and the per-class sums of the closed form are all-reduced, autograd-aware), so
            the loss is the one of the global batch. Default ``False``: each process pools only
            its own batch, as the official mmseg multi-GPU runs do. No effect in one process.

    Returns:
        A scalar; exactly 0 (still attached to the graph, zero gradient) when fewer than two
        classes are present, also when some logits are infinite.

    Cost: O(N·K) time and memory; the N² pixel pairs are never formed.
    """
    _check_options(surrogate, transform, scale, ova_reduction, gamma)
    z, y = _flatten(logits, target, ignore_index)
    k = logits.shape[1]
    sync = _syncing(sync)
    counts = torch.bincount(y, minlength=k)
    if sync:
        torch.distributed.all_reduce(counts)  # every process takes the same branches below
    present = counts > 0
    n_present = int(present.sum())
    if n_present < 2:
        return _zero_like_graph(logits)
    p = torch.sigmoid(z if z.dtype == torch.float64 else z.float())  # half precision -> fp32

    if transform == "ova":
        # negatives of class i: every valid pixel not labelled i; means from the class totals.
        n_neg = (counts.sum() - counts).clamp(min=1)
        w = counts.to(p.dtype).unsqueeze(1)

        def negatives(m: Tensor) -> Tensor:  # (K,) mean over the negatives of each class i
            return ((m * w).sum(0) - m.diagonal() * counts) / n_neg
    else:

        def negatives(m: Tensor) -> Tensor:  # (K, K): [j, i] = mean over pixels of class j
            return m

    # Each surrogate splits into a positive-side mean (pixels m of class i, column i) and
    # negative-side means (pixels n, column i), since pixels m and n enter independently.
    if surrogate == "exp":  # e^{-γ(a-b)} = e^{-γa} e^{γb}
        pos = _class_means(torch.exp(-gamma * p), y, counts, sync).diagonal()
        pair = pos * negatives(_class_means(torch.exp(gamma * p), y, counts, sync))
    else:
        m1 = _class_means(p, y, counts, sync)  # m1[c, i]: mean score of column i over class c
        d1 = m1.diagonal()
        if surrogate == "square":  # E(γ - a + b)² = E(γ - a)² + 2(γ - Ea)Eb + Eb²
            m2 = _class_means(p * p, y, counts, sync)
            pos_sq = gamma**2 - 2 * gamma * d1 + m2.diagonal()
            pair = pos_sq + 2 * (gamma - d1) * negatives(m1) + negatives(m2)
        else:  # hinge with γ ≥ 1 on scores in [0, 1]: γ - a + b ≥ 0, the clamp never binds
            pair = (gamma - d1) + negatives(m1)

    if transform == "ova":  # official: a sum over the present classes (factor 1)
        mean = pair[present].sum() / (n_present if ova_reduction == "mean" else 1)
    else:
        mask = present.unsqueeze(0) & present.unsqueeze(1)
        mask.fill_diagonal_(False)
        mean = pair[mask].sum() / (n_present * (n_present - 1))
    factor = _CODE_SCALE[surrogate] if scale == "code" else 1.0
    return (factor * mean).to(logits.dtype)


class AUCLoss(nn.Module):
    """Module form of :func:`auc_loss` (drop-in next to ``nn.CrossEntropyLoss``).

    Input logits (B, K, H, W) at label size, target (B, H, W); output a scalar.
    """

    def __init__(
        self,
        surrogate: Surrogate = "square",
        transform: Transform = "ovo",
        scale: Scale = "code",
        ova_reduction: Reduction = "sum",
        gamma: float = 1.0,
        ignore_index: int | None = 255,
        sync: bool = False,
    ):
        super().__init__()
        _check_options(surrogate, transform, scale, ova_reduction, gamma)
        self.sync = bool(sync)
        self.surrogate, self.transform, self.scale = surrogate, transform, scale
        self.ova_reduction, self.gamma, self.ignore_index = ova_reduction, gamma, ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return auc_loss(
            logits,
            target,
            surrogate=self.surrogate,
            transform=self.transform,
            scale=self.scale,
            ova_reduction=self.ova_reduction,
            gamma=self.gamma,
            ignore_index=self.ignore_index,
            sync=self.sync,
        )

    def extra_repr(self) -> str:
        extra = f", ova_reduction={self.ova_reduction}" if self.transform == "ova" else ""
        return f"surrogate={self.surrogate}, transform={self.transform}, scale={self.scale}{extra}"


class SegmentationLoss(nn.Module):
    r"""AUCSeg's total loss :math:`L = w_{auc} \cdot L_{auc} + w_{ce} \cdot \mathrm{CE}`.

    Logits are bilinearly upsampled (``align_corners=False``) to the label size first, as in the
    mmseg decode head. ``w_auc`` is 4 on ADE20K and 1 on Cityscapes / COCO-Stuff in the official
    configs; ``w_auc = 0`` gives plain cross-entropy.

    ``sync=True`` under ``torch.distributed``: the AUC term pools every process's pixels and
    the CE is scaled so that DDP's gradient average gives the global-batch mean, i.e. the
    objective of the global batch (default: each process's own batch, as in mmseg).

    ``forward(logits (B, K, h, w), target (B, H, W)) -> dict(loss, ce, auc)``.
    """

    def __init__(
        self,
        w_auc: float = 1.0,
        w_ce: float = 1.0,
        ignore_index: int = 255,
        sync: bool = False,
        **auc_kw,
    ):
        super().__init__()
        self.w_auc, self.w_ce, self.ignore_index = w_auc, w_ce, ignore_index
        self.sync = bool(sync)
        self.auc = AUCLoss(ignore_index=ignore_index, sync=sync, **auc_kw)

    def forward(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, target.shape[-2:], mode="bilinear", align_corners=False)
        target = target.long()
        if _syncing(self.sync):
            ce = self._global_ce(logits, target)
        elif (target != self.ignore_index).any():
            ce = F.cross_entropy(logits, target, ignore_index=self.ignore_index)
        else:  # every pixel ignored: CE would be 0/0
            ce = _zero_like_graph(logits)
        auc = self.auc(logits, target) if self.w_auc else logits.new_zeros(())
        return {"loss": self.w_auc * auc + self.w_ce * ce, "ce": ce.detach(), "auc": auc.detach()}

    def _global_ce(self, logits: Tensor, target: Tensor) -> Tensor:
        """This process's share of the global-batch CE mean, times the world size: DDP averages
        the gradients over processes, which then gives the gradient of the global mean."""
        dist = torch.distributed
        total = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum")
        n = (target != self.ignore_index).sum().to(torch.float64)
        dist.all_reduce(n)
        if n == 0:
            return _zero_like_graph(logits)
        return total * (dist.get_world_size() / n).to(total.dtype)
