"""Negative sampling, vectorised: all (pair × S) negatives of an epoch drawn at once.

A draw v for user u is rejected when (u, v) is a training positive. Membership is tested with
``np.searchsorted`` on the sorted keys u·I + i of the training CSR; only the collisions are
redrawn, until none remain.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["TripletSampler", "naive_uniform_negatives", "positive_pairs", "sample_negatives"]


def positive_pairs(train: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of every stored positive, in row-major order (like ``nonzero()``)."""
    train = sp.csr_matrix(train)
    train.sort_indices()
    users = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
    return users, train.indices.astype(np.int64)


def sample_negatives(
    train: sp.csr_matrix, users: np.ndarray, num_negatives: int, rng: np.random.Generator
) -> np.ndarray:
    """Uniform negatives: (n,) users -> (n, S) items, none a training positive of its user."""
    train = sp.csr_matrix(train)
    train.sort_indices()
    n_items = train.shape[1]
    counts = np.diff(train.indptr)
    if (counts[users] >= n_items).any():
        raise ValueError("a user has every item as a positive: no negative exists")
    pu, pi = positive_pairs(train)
    keys = pu * n_items + pi  # sorted: rows ascending, sorted indices within rows
    users = np.asarray(users, dtype=np.int64)
    neg = rng.integers(0, n_items, size=(len(users), num_negatives))
    base = users[:, None] * n_items
    todo = np.arange(neg.size)  # flat positions still to check
    while todo.size:
        cand = (base + neg).ravel()[todo]
        at = np.searchsorted(keys, cand)
        hit = keys[np.minimum(at, len(keys) - 1)] == cand if len(keys) else np.zeros(0, bool)
        todo = todo[hit]
        neg.ravel()[todo] = rng.integers(0, n_items, size=todo.size)
    return neg


def naive_uniform_negatives(
    train: sp.csr_matrix, users: np.ndarray, num_negatives: int, seed: int = 0
) -> np.ndarray:
    """The official per-triplet loop (``randint`` + set lookup per draw), kept for ``bench``."""
    train = sp.lil_matrix(train)
    positives = {u: set(r) for u, r in enumerate(train.rows)}
    n_items = train.shape[1]
    state = np.random.RandomState(seed)
    out = np.empty((len(users), num_negatives), dtype=np.int64)
    for row, u in enumerate(users):
        for j in range(num_negatives):
            v = state.randint(n_items)
            while v in positives[u]:
                v = state.randint(n_items)
            out[row, j] = v
    return out


class TripletSampler:
    """Draws an epoch of training tuples from the training CSR.

    * ``uniform`` (DPCML1): each (u, v+) becomes S triplets (u, v+, v−_j); neg is (n·S,).
    * ``hard`` (DPCML2): each (u, v+) gets S uniform candidates; neg is (n, S) and the model picks
      the hardest inside the loss.

    ``batches(batch_size)`` yields shuffled (users, pos, neg) long tensors (like the official
    ``DataLoader(shuffle=True)``), resampling the negatives on every call.
    """

    def __init__(self, train: sp.csr_matrix, num_negatives: int = 10, mode: str = "uniform",
                 seed: int = 0):  # fmt: skip
        if mode not in ("uniform", "hard"):
            raise ValueError(f"mode must be 'uniform' or 'hard', got {mode!r}")
        self.train = sp.csr_matrix(train)
        self.num_negatives, self.mode = num_negatives, mode
        self.rng = np.random.default_rng(seed)
        self.users, self.pos = positive_pairs(self.train)

    def __len__(self) -> int:
        """Training tuples per epoch."""
        n = len(self.users)
        return n * self.num_negatives if self.mode == "uniform" else n

    def epoch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        neg = sample_negatives(self.train, self.users, self.num_negatives, self.rng)
        if self.mode == "hard":
            return self.users, self.pos, neg
        s = self.num_negatives
        return np.repeat(self.users, s), np.repeat(self.pos, s), neg.ravel()

    def batches(self, batch_size: int, device: torch.device | str = "cpu"):
        users, pos, neg = (torch.from_numpy(a).to(device) for a in self.epoch())
        order = torch.from_numpy(self.rng.permutation(len(users))).to(device)
        for start in range(0, len(users), batch_size):
            idx = order[start : start + batch_size]
            yield users[idx], pos[idx], neg[idx]
