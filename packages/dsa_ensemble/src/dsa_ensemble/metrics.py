r"""Ensemble evaluation: accuracy, NLL, ECE, Brier, head diversity and the ensemble gain.

Primary prediction: the mean of the heads' softmax, :math:`\bar p = \frac1S\sum_s \mathrm{softmax}
(z_s)`. ``agreement`` (the official ``validate()``'s first ensemble, option only): per evaluation
batch, :math:`w = \mathrm{softmax}_s(\#\{i: \arg\max z_{s,i} = \arg\max \bar z_i\})` and logits
:math:`\sum_s w_s z_s`; it depends on the batch composition. The code's accuracy-weighted ensemble
uses test labels and is not offered.

Diversity (pitfall 7, on predictions, not features): the mean over head pairs of the Pearson
correlation of the flattened (N*K) softmax matrices, and the mean pairwise disagreement rate of
the argmax labels.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from labcore.metrics import expected_calibration_error

__all__ = ["agreement_weighted_logits", "ensemble_metrics", "pairwise_diversity"]


def agreement_weighted_logits(logits: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The code's agreement-weighted ensemble logits (N, K) from stacked logits (S, N, K)."""
    out = []
    for i in range(0, logits.shape[1], batch_size):
        z = logits[:, i : i + batch_size]
        ens = z.mean(dim=0).argmax(dim=-1)
        counts = (z.argmax(dim=-1) == ens[None]).float().sum(dim=1)  # (S,)
        w = torch.softmax(counts, dim=0)
        out.append((w[:, None, None] * z).sum(dim=0))
    return torch.cat(out)


def pairwise_diversity(probs: torch.Tensor) -> dict[str, float]:
    """Mean pairwise Pearson correlation of (S, N, K) softmax vectors and mean disagreement."""
    s = probs.shape[0]
    if s < 2:
        return {"head_correlation": float("nan"), "head_disagreement": float("nan")}
    flat = probs.reshape(s, -1).double()
    corr = torch.corrcoef(flat)
    labels = probs.argmax(dim=-1)
    pairs = list(itertools.combinations(range(s), 2))
    c = float(np.mean([corr[i, j].item() for i, j in pairs]))
    d = float(np.mean([(labels[i] != labels[j]).double().mean().item() for i, j in pairs]))
    return {"head_correlation": c, "head_disagreement": d}


def _scores(p: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    p = p.double().clamp_min(1e-12)
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).double()
    return {
        "accuracy": float((p.argmax(dim=1) == y).double().mean()),
        "nll": float(-torch.log(p.gather(1, y[:, None])).mean()),
        "ece": expected_calibration_error(p.numpy(), y.numpy(), n_bins=15),
        "brier": float(((p - onehot) ** 2).sum(dim=1).mean()),
    }


def ensemble_metrics(logits: torch.Tensor | list[torch.Tensor], targets: torch.Tensor,
                     agreement_batch: int = 64) -> dict:  # fmt: skip
    """All metrics from per-head logits (S, N, K) (or a list of S (N, K)) and labels (N,).

    Returns ``accuracy/nll/ece/brier`` of the mean-softmax ensemble, ``per_head`` accuracies,
    ``mean_head_accuracy``, ``ensemble_gain`` (ensemble - mean head), the diversity pair and the
    code-faithful ``agreement_accuracy``.
    """
    z = torch.stack(list(logits)) if isinstance(logits, list | tuple) else logits
    z = z.detach().float().cpu()
    y = targets.detach().long().cpu()
    probs = z.softmax(dim=-1)
    out = _scores(probs.mean(dim=0), y)
    heads = [float((probs[s].argmax(dim=-1) == y).double().mean()) for s in range(z.shape[0])]
    out["per_head_accuracy"] = heads
    out["mean_head_accuracy"] = float(np.mean(heads))
    out["ensemble_gain"] = out["accuracy"] - out["mean_head_accuracy"]
    out["mean_head_nll"] = float(np.mean([_scores(probs[s], y)["nll"] for s in range(z.shape[0])]))
    out.update(pairwise_diversity(probs))
    agree = agreement_weighted_logits(z, agreement_batch).softmax(dim=-1)
    out["agreement_accuracy"] = float((agree.argmax(dim=-1) == y).double().mean())
    out["n"] = int(y.numel())
    return out
