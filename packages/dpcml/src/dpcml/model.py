"""The DPCML model: C embedding vectors per user, one per item, min-distance scores."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dpcml.config import DPCMLConfig
from dpcml.losses import (
    dcrs_code,
    dcrs_paper,
    hard_negative_hinge,
    min_sq_distance,
    triplet_hinge,
    user_diversity,
)

__all__ = ["DPCML", "adaptive_vector_counts"]


def adaptive_vector_counts(n_positives, n_vectors: int) -> np.ndarray:
    """APA reconstruction: C_u = min(C, max(1, ⌊log2 n_u⌋)) from the TODO in the official code."""
    n = np.maximum(np.asarray(n_positives, dtype=np.float64), 1.0)
    return np.clip(np.floor(np.log2(n)), 1, n_vectors).astype(np.int64)


class DPCML(nn.Module):
    r"""Diversity-Promoting Collaborative Metric Learning (Bao et al., NeurIPS 2022).

    Score (smaller = preferred): s(u, v) = min_{c ≤ C} ‖g_u^c − g_v‖². Loss on a batch:

        Σ_b max(0, λ + s(u_b, v_b+) − s(u_b, v_b−)) + η · DCRS(all users' vectors)

    where uniform sampling gives one negative per triplet (DPCML1) and hard sampling takes the
    candidate with the smallest s among S (DPCML2). After every optimiser step call
    :meth:`project_users_` (the official ``ClipUserNorm``: every user vector onto the sphere of
    radius ``max_norm``). Items are renormalised to ``max_norm`` on lookup, as
    ``nn.Embedding(max_norm=...)`` does in the code.

    Args:
        num_users, num_items: table sizes.
        config: :class:`DPCMLConfig`.
        vector_counts: optional (U,) ints C_u ≤ C (adaptive assignment); ``None`` = C for all.

    Shapes: ``forward(users (B,), pos (B,), neg (B,) or (B, S)) -> scalar``;
    ``full_scores(users (B,)) -> (B, num_items)`` (= −s, higher = better).
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        config: DPCMLConfig | None = None,
        vector_counts=None,
    ):
        super().__init__()
        self.config = config = config or DPCMLConfig()
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.user_embeddings = nn.Embedding(num_users, config.n_vectors * config.dim)
        self.item_embeddings = nn.Embedding(num_items, config.dim)  # max_norm: item_vectors
        if vector_counts is None:
            self.register_buffer("valid", None)
        else:
            counts = torch.as_tensor(np.asarray(vector_counts), dtype=torch.long)
            if counts.shape != (num_users,) or (counts < 1).any():
                raise ValueError("vector_counts must be (num_users,) positive integers")
            self.register_buffer("valid", torch.arange(config.n_vectors) < counts.unsqueeze(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: users N(0, 0.01²), items N(0, 1/d)."""
        nn.init.normal_(self.user_embeddings.weight, mean=0.0, std=0.01)
        nn.init.normal_(self.item_embeddings.weight, mean=0.0, std=1.0 / math.sqrt(self.config.dim))

    def user_vectors(self, users: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, d) vectors of ``users`` (all users when ``None``)."""
        w = self.user_embeddings.weight if users is None else self.user_embeddings(users)
        return w.view(-1, self.config.n_vectors, self.config.dim)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Look up items like ``nn.Embedding(max_norm=...)``: rows with ‖g_v‖ > max_norm are
        rescaled by max_norm / (‖g_v‖ + 1e-7). In training mode the table is rescaled in place
        first, as torch does (vectorised here; torch's CPU kernel loops); in eval mode the
        rescaled rows are returned and the table is left untouched."""
        w, max_norm = self.item_embeddings.weight, self.config.max_norm
        if not self.training:
            rows = F.embedding(items, w)
            norm = rows.norm(dim=-1, keepdim=True)
            return torch.where(norm > max_norm, rows * (max_norm / (norm + 1e-7)), rows)
        self.renormalize_items_(items)
        return F.embedding(items, w)

    @torch.no_grad()
    def renormalize_items_(self, items: torch.Tensor) -> None:
        """Rescale the stored rows ``items`` with ‖g_v‖ > max_norm to max_norm / (‖g_v‖ + 1e-7)
        of their length, in place (what a training-mode lookup does; idempotent: a rescaled row
        is below max_norm). Distributed training calls it on every item of the *global* batch
        on every rank, so the item tables stay identical across ranks."""
        w, max_norm = self.item_embeddings.weight, self.config.max_norm
        rows = w[items]
        norm = rows.norm(dim=-1, keepdim=True)
        w[items] = torch.where(norm > max_norm, rows * (max_norm / (norm + 1e-7)), rows)

    def _valid(self, users: torch.Tensor | None) -> torch.Tensor | None:
        if self.valid is None:
            return None
        return self.valid if users is None else self.valid[users]

    def distances(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """s(u, v) for ``users`` (B,) and ``items`` (B,) or (B, S)."""
        return min_sq_distance(self.user_vectors(users), self.item_vectors(items),
                               self._valid(users))[0]  # fmt: skip

    def assignments(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Index of the user vector closest to each item (arg-min c), same shape as ``items``."""
        return min_sq_distance(self.user_vectors(users), self.item_vectors(items),
                               self._valid(users))[1]  # fmt: skip

    def preference_loss(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> torch.Tensor:
        """The summed hinge; ``neg`` (B,) is one triplet each, (B, S) are hard candidates."""
        cfg = self.config
        g, valid = self.user_vectors(users), self._valid(users)
        v = self.item_vectors(torch.cat([pos, neg.reshape(-1)]))  # one renormalising lookup
        v_pos, v_neg = v[: len(pos)], v[len(pos) :].view(*neg.shape, -1)
        d_pos = min_sq_distance(g, v_pos, valid)[0]
        d_neg = min_sq_distance(g, v_neg, valid)[0]
        if neg.dim() == 1:
            return triplet_hinge(d_pos, d_neg, cfg.margin)
        return hard_negative_hinge(d_pos, d_neg, cfg.margin, cfg.hard_mode,
                                   cfg.hard_temperature, cfg.hard_beta)  # fmt: skip

    def dcrs_loss(self) -> torch.Tensor:
        """DCRS over all users' vectors (the code's scope), in the configured form."""
        cfg = self.config
        fn = dcrs_code if cfg.dcrs == "code" else dcrs_paper
        return fn(self.user_vectors(), cfg.delta1, cfg.delta2, self._valid(None))

    def forward(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, pair_weight: float = 1.0
    ) -> torch.Tensor:
        """``pair_weight`` · summed hinge + η · DCRS. Distributed training passes the world size
        W: DDP averages the W ranks' gradients, which turns W · (hinge of a rank's share) back
        into the hinge of the whole global batch, while DCRS (all users, the same on every
        rank) keeps its weight η."""
        loss = self.preference_loss(users, pos, neg)
        if pair_weight != 1.0:
            loss = loss * pair_weight
        cfg = self.config
        if cfg.dcrs_weight > 0 and cfg.delta1 < cfg.delta2 and cfg.n_vectors > 1:
            loss = loss + cfg.dcrs_weight * self.dcrs_loss()
        return loss

    @torch.no_grad()
    def project_users_(self) -> None:
        """g_u^c ← max_norm · g_u^c / ‖g_u^c‖ for every user and every c (onto the sphere)."""
        g = self.user_vectors()
        g.mul_(self.config.max_norm / g.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def full_scores(self, users: torch.Tensor) -> torch.Tensor:
        """−s(u, v) against every item, (B,) -> (B, num_items), one matmul.

        s = min_c (‖g_u^c‖² + ‖g_v‖² − 2 g_u^c · g_v). Items are read from the weight as stored
        (the official ``predict`` does the same, without the lookup renormalisation).
        """
        g = self.user_vectors(users)  # (B, C, d)
        b, c, _ = g.shape
        v = self.item_embeddings.weight  # (I, d)
        flat = g.reshape(b * c, -1)
        base = flat.square().sum(-1, keepdim=True) + v.square().sum(-1)  # ‖g‖² + ‖v‖²
        # fp32 even under autocast: the expansion cancels (‖g − v‖² is small next to ‖g‖² + ‖v‖²)
        # and bf16's 8 bits would tie most of a user's items
        with torch.autocast(g.device.type, enabled=False):
            d = torch.addmm(base, flat, v.T, alpha=-2.0).view(b, c, -1)  # (B, C, I)
        valid = self._valid(users)
        if valid is not None:
            d = d.masked_fill(~valid.unsqueeze(-1), math.inf)
        return -d.amin(dim=1).clamp_min_(0.0)

    @torch.no_grad()
    def diversity(self) -> torch.Tensor:
        """Mean squared distance between a user's vectors over ordered pairs c1 ≠ c2, (U,).

        This is the quantity the code's per-pair DCRS keeps inside [δ1, δ2] (= 2 δ_u of the paper).
        """
        return 2.0 * user_diversity(self.user_vectors(), self._valid(None))
