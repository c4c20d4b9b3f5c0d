"""Exact k-nearest-neighbour lists and Cross-view Relation Transfer (CRT), blockwise.

For a view pair (a, b) and a view v with the other view u:

* a sample **present in v** gets its k nearest neighbours in v among the samples present in v
  (Euclidean, itself excluded);
* a sample **missing v** (so present in u) gets, by CRT, its neighbours *in u* restricted to
  samples that have v: the official code takes the sample's 40-long list in u (110/130 for the
  negatives' list), drops the entries missing v and keeps the first k. The surviving entries
  are exactly the nearest samples in u among those present in u and v, so one search among
  those candidates gives the same list; where fewer than k of the pool survive (the official
  code then fails on a shape mismatch) it goes on past the pool.

The imputed latent of a sample missing v is the mean of v's encoder over its CRT neighbours'
own view-v features (:func:`crt_impute`). Distances are computed in row blocks of at most
``block_elems`` entries, so memory is ``O(block + n·k)``, never ``n × n``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["crt_impute", "knn_search", "neighbor_lists"]


def knn_search(
    x: torch.Tensor,
    k: int,
    queries: np.ndarray,
    candidates: np.ndarray,
    block_elems: int = 1 << 24,
) -> np.ndarray:
    """Global indices ``(len(queries), k)`` of each query row's k nearest candidate rows of ``x``,
    nearest first, a query never its own neighbour. ``queries``/``candidates``: index arrays."""
    queries = np.asarray(queries, dtype=np.int64)
    candidates = np.asarray(candidates, dtype=np.int64)
    out = np.empty((len(queries), k), dtype=np.int64)
    if len(queries) == 0 or k == 0:
        return out
    if k > len(candidates) - np.isin(queries[:1], candidates).sum():
        raise ValueError(f"k={k} neighbours asked for among {len(candidates)} candidates")
    xc = x[torch.from_numpy(candidates).to(x.device)]
    cn = xc.square().sum(1)
    pos = np.full(len(x), -1, dtype=np.int64)
    pos[candidates] = np.arange(len(candidates))
    rows = max(1, block_elems // max(1, len(candidates)))
    for s in range(0, len(queries), rows):
        q = queries[s : s + rows]
        xq = x[torch.from_numpy(q).to(x.device)]
        d = xq.square().sum(1, keepdim=True) - 2.0 * xq @ xc.T + cn[None, :]
        self_pos = pos[q]
        hit = np.flatnonzero(self_pos >= 0)
        if len(hit):
            d[torch.from_numpy(hit), torch.from_numpy(self_pos[hit])] = float("inf")
        idx = torch.topk(d, k, dim=1, largest=False, sorted=True).indices.cpu().numpy()
        out[s : s + len(q)] = candidates[idx]
    return out


def neighbor_lists(
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    present_a: np.ndarray,
    present_b: np.ndarray,
    k: int,
    block_elems: int = 1 << 24,
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists ``(N_a, N_b)``, each ``(n, k')`` global indices, for every sample of the
    pair (each has view a or b); missing views get CRT lists. ``k' = min(k, available)``."""
    present_a, present_b = np.asarray(present_a, bool), np.asarray(present_b, bool)
    both = present_a & present_b
    lists = []
    for x_v, x_u, p_v in ((x_a, x_b, present_a), (x_b, x_a, present_b)):
        kk = min(k, int(p_v.sum()) - 1)
        if (~p_v).any():
            kk = min(kk, int(both.sum()))
        if kk < 1:
            raise ValueError("too few samples with both views for neighbour search")
        out = np.full((len(p_v), kk), -1, dtype=np.int64)
        have = np.flatnonzero(p_v)
        out[have] = knn_search(x_v, kk, have, have, block_elems)
        miss = np.flatnonzero(~p_v)
        if len(miss):
            out[miss] = knn_search(x_u, kk, miss, np.flatnonzero(both), block_elems)
        lists.append(out)
    return lists[0], lists[1]


def crt_impute(
    z: torch.Tensor, neighbor_latents: torch.Tensor, missing: torch.Tensor
) -> torch.Tensor:
    """``z`` with the rows in ``missing`` replaced by the mean of their neighbours' latents.

    ``z``: ``(n, d)`` own-view latents; ``neighbor_latents``: ``(n, k, d)`` the view's encoder on
    each sample's (CRT) neighbours' features; ``missing``: ``(n,)`` bool.
    """
    return torch.where(missing[:, None], neighbor_latents.mean(1), z)
