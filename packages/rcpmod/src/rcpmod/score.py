r"""The RCPMOD outlier score of one view pair (official ``evaluation``), computed in blocks.

**Consistency score.** With normalised (CRT-imputed) latents :math:`h^a, h^b` of all n samples
as *one* batch, :math:`h = [h^a; h^b]` and τ = 0.5, each of the 2n anchors has the NT-Xent loss

.. math:: \ell_r = \log \sum_{c \ne r} e^{h_r\cdot h_c/τ} − h_r\cdot h_{t(r)}/τ,
   \qquad s_{con}(i) = (\ell_i + \ell_{n+i}) / 2.

The official code builds the 2n × 2n similarity matrix (about 10 copies of it, with the mask and
the logits); :func:`consistency_score` streams it in ``block_rows × block_cols`` tiles and keeps
only a running sum of exponentials per row, so memory is O(n·d + block) while the result is the
same (unit rows bound every logit by 1/τ, so the sum of :math:`e^{(s − 1/τ)}` needs no running max).

**Attribute score.** ê_v = min-max of the view-v reconstruction errors over the samples present
in v; a sample missing v takes its present view's ê. :math:`s_{att} = ê_a + ê_b`.

**Fused.** :math:`s = R_w·mm(s_{att}) + mm(s_{con})`, mm = min-max over the samples.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "attribute_score",
    "consistency_score",
    "consistency_score_against",
    "consistency_score_dense",
    "fuse",
    "minmax",
]


def consistency_score(
    h_a: torch.Tensor,
    h_b: torch.Tensor,
    temperature: float = 0.5,
    block_rows: int = 256,
    block_cols: int = 2048,
    queries: slice | None = None,
) -> torch.Tensor:
    """Per-sample whole-dataset NT-Xent score ``(n,)`` of normalised ``h_a, h_b`` ``(n, d)``,
    in float64, never materialising more than ``block_rows × block_cols`` similarities.

    ``queries``: score only these samples (a slice of 0..n−1) against all 2n rows; used to
    split the work across ranks.
    """
    h = torch.cat([h_a, h_b]).to(torch.float64)
    n = h_a.shape[0]
    inv_t = 1.0 / temperature
    sel = range(n)[queries] if queries is not None else range(n)
    if len(sel) == 0:
        return h.new_zeros(0)
    start, stop = sel.start, sel.stop
    out = []
    for s in range(start, stop, block_rows):
        e = min(s + block_rows, stop)
        rows = torch.cat([h[s:e], h[n + s : n + e]])  # anchors i (view a) and n+i (view b)
        acc = torch.zeros(rows.shape[0], dtype=torch.float64, device=h.device)
        for c in range(0, 2 * n, block_cols):
            tile = rows @ h[c : c + block_cols].T  # one temporary per tile, updated in place
            acc += tile.sub_(1.0).mul_(inv_t).exp_().sum(1)
        self_sim = rows.square().sum(1) * inv_t
        acc -= torch.exp(self_sim - inv_t)  # drop c == r
        pos = (h[s:e] * h[n + s : n + e]).sum(1) * inv_t
        lse = torch.log(acc.clamp_min(torch.finfo(torch.float64).tiny)) + inv_t
        m = e - s
        out.append(((lse[:m] - pos) + (lse[m:] - pos)) / 2)
    return torch.cat(out)


def consistency_score_dense(h_a: torch.Tensor, h_b: torch.Tensor, temperature: float = 0.5):
    """Reference: the official ``contrastive_score`` (2n × 2n matrix, CE, positive first)."""
    n = h_a.shape[0]
    h = torch.cat([h_a, h_b]).to(torch.float64)
    sim = h @ h.T / temperature
    pos = torch.cat([torch.diag(sim, n), torch.diag(sim, -n)]).reshape(2 * n, 1)
    mask = torch.ones(2 * n, 2 * n, dtype=torch.bool)
    mask.fill_diagonal_(False)
    idx = torch.arange(n)
    mask[idx, n + idx] = False
    mask[n + idx, idx] = False
    neg = sim[mask].reshape(2 * n, -1)
    logits = torch.cat([pos, neg], dim=1)
    ce = F.cross_entropy(logits, torch.zeros(2 * n, dtype=torch.long), reduction="none")
    return (ce[:n] + ce[n:]) / 2


def minmax(x: np.ndarray) -> np.ndarray:
    """(x − min) / (max − min); all zeros for a constant vector."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def attribute_score(
    err_a: np.ndarray,
    err_b: np.ndarray,
    present_a: np.ndarray,
    present_b: np.ndarray,
    bounds: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> tuple[np.ndarray, tuple[tuple[float, float], tuple[float, float]]]:
    """``s_att = ê_a + ê_b`` and the (min, max) used per view.

    ``err_v``: ``(n,)`` reconstruction errors (ignored where view v is missing). ``bounds``:
    reuse the training (min, max) (for new samples) instead of the samples' own.
    """
    present = (np.asarray(present_a, bool), np.asarray(present_b, bool))
    norm, used = [], []
    for v, err in enumerate((np.asarray(err_a, float), np.asarray(err_b, float))):
        p = present[v]
        if bounds is None:
            lo, hi = (float(err[p].min()), float(err[p].max())) if p.any() else (0.0, 1.0)
        else:
            lo, hi = bounds[v]
        used.append((lo, hi))
        norm.append((err - lo) / (hi - lo) if hi > lo else np.zeros_like(err))
    e_a = np.where(present[0], norm[0], norm[1])
    e_b = np.where(present[1], norm[1], norm[0])
    return e_a + e_b, (used[0], used[1])


def fuse(s_att: np.ndarray, s_con: np.ndarray, rw: float) -> np.ndarray:
    """``Rw · mm(s_att) + mm(s_con)``."""
    return rw * minmax(s_att) + minmax(s_con)


def consistency_score_against(
    q_a: torch.Tensor,
    q_b: torch.Tensor,
    ref: torch.Tensor,
    temperature: float = 0.5,
    block_rows: int = 256,
    block_cols: int = 2048,
) -> torch.Tensor:
    """Consistency score of *new* samples ``(m,)``: each anchor's NT-Xent against its own twin
    plus the 2n reference rows ``ref = [h^a; h^b]`` of the training set (normalised inputs)."""
    inv_t = 1.0 / temperature
    out = []
    for s in range(0, q_a.shape[0], block_rows):
        qa = q_a[s : s + block_rows].to(torch.float64)
        qb = q_b[s : s + block_rows].to(torch.float64)
        rows = torch.cat([qa, qb])
        acc = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
        for c in range(0, ref.shape[0], block_cols):
            tile = rows @ ref[c : c + block_cols].T
            acc += tile.sub_(1.0).mul_(inv_t).exp_().sum(1)
        pos = (qa * qb).sum(1) * inv_t
        acc += torch.exp(torch.cat([pos, pos]) - inv_t)  # the twin is in the denominator too
        lse = torch.log(acc) + inv_t
        m = qa.shape[0]
        out.append(((lse[:m] - pos) + (lse[m:] - pos)) / 2)
    if not out:
        return ref.new_zeros(0)
    return torch.cat(out)
