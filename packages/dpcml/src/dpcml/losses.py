"""The DPCML objective as pure functions of embeddings.

Notation: a user has C vectors g_u^1..g_u^C in R^d, an item one vector g_v. The score is the
squared Euclidean distance to the closest user vector, s(u, v) = min_c ‖g_u^c − g_v‖²
(smaller = more preferred).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "dcrs_code",
    "dcrs_paper",
    "hard_negative_hinge",
    "min_sq_distance",
    "pairwise_user_distances",
    "triplet_hinge",
    "user_diversity",
]


def min_sq_distance(
    users: torch.Tensor, items: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """s(u, v) = min_c ‖g_u^c − g_v‖² and the arg-min vector c.

    ``users`` (B, C, d); ``items`` (B, d) or (B, S, d); ``valid`` (B, C) bool marks the vectors a
    user owns (adaptive C_u), the others count as +inf. Returns two tensors of shape (B,) or (B, S).
    """
    if items.dim() == 2:
        d = (users - items.unsqueeze(1)).square().sum(-1)  # (B, C)
        if valid is not None:
            d = d.masked_fill(~valid, math.inf)
        return d.min(dim=1)
    d = (users.unsqueeze(2) - items.unsqueeze(1)).square().sum(-1)  # (B, C, S)
    if valid is not None:
        d = d.masked_fill(~valid.unsqueeze(-1), math.inf)
    return d.min(dim=1)


def triplet_hinge(d_pos: torch.Tensor, d_neg: torch.Tensor, margin: float) -> torch.Tensor:
    """Σ_b max(0, λ + s(u_b, v_b+) − s(u_b, v_b−)), **summed** over the batch as in the code."""
    return F.relu(margin + d_pos - d_neg).sum()


def hard_negative_hinge(
    d_pos: torch.Tensor,
    d_neg: torch.Tensor,
    margin: float,
    mode: str = "hardest",
    temperature: float = 0.1,
    beta: float = 0.3,
) -> torch.Tensor:
    """Hinge against S candidate negatives per pair; ``d_pos`` (B,), ``d_neg`` (B, S).

    * ``hardest`` (official DPCML2/HarCML): the candidate with the *smallest* s(u, v−), i.e.
      Σ_b max(0, λ + s(u, v+) − min_j s(u, v_j)). Differentiable through the chosen candidate.
    * ``softmax`` (reconstruction of DiHarS): Σ_b Σ_j w_bj · max(0, λ + s+ − s_j),
      w_bj = softmax_j(−s_j / τ).
    * ``topk`` (reconstruction of DiHarS / OPAUC on FPR ∈ [0, β]): the hinge averaged over the
      ⌈βS⌉ smallest s_j.
    """
    if mode == "hardest":
        return triplet_hinge(d_pos, d_neg.min(dim=1).values, margin)
    hinge = F.relu(margin + d_pos.unsqueeze(1) - d_neg)  # (B, S)
    if mode == "softmax":
        return (torch.softmax(-d_neg / temperature, dim=1) * hinge).sum()
    if mode == "topk":
        k = max(1, math.ceil(beta * d_neg.shape[1]))
        idx = d_neg.topk(k, dim=1, largest=False).indices
        return hinge.gather(1, idx).mean(dim=1).sum()
    raise ValueError(f"unknown hard mode {mode!r}")


def pairwise_user_distances(users: torch.Tensor) -> torch.Tensor:
    """‖g_u^c1 − g_u^c2‖² for the C(C−1)/2 unordered pairs c1 < c2: (U, C, d) -> (U, P)."""
    i, j = torch.triu_indices(users.shape[1], users.shape[1], 1, device=users.device)
    return (users[:, i] - users[:, j]).square().sum(-1)


def _pair_mask(users: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor | None:
    """(U, P) bool: pairs c1 < c2 of vectors the user owns (``None`` = all)."""
    if valid is None:
        return None
    i, j = torch.triu_indices(users.shape[1], users.shape[1], 1, device=users.device)
    return valid[:, i] & valid[:, j]


def dcrs_code(
    users: torch.Tensor, delta1: float, delta2: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """DCRS as the official code computes it (per ordered pair, over all users' vectors):

        1/(U·C²) Σ_u Σ_{c1≠c2} [max(0, δ1 − d_u^{c1c2}) + max(0, d_u^{c1c2} − δ2)],

    with d_u^{c1c2} = ‖g_u^c1 − g_u^c2‖². The zeroed diagonal counts in the U·C² normaliser.
    With ``valid`` (adaptive C_u) the normaliser is Σ_u C_u². ``users`` is (U, C, d).
    """
    d = pairwise_user_distances(users)
    penalty = F.relu(delta1 - d) + F.relu(d - delta2)  # each unordered pair counts twice
    pairs = _pair_mask(users, valid)
    if pairs is None:
        return 2.0 * penalty.sum() / (users.shape[0] * users.shape[1] ** 2)
    return 2.0 * (penalty * pairs).sum() / valid.sum(1).square().sum()


def user_diversity(users: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's δ_u = 1/(2C(C−1)) Σ_{c1,c2} ‖g_u^c1 − g_u^c2‖², (U, C, d) -> (U,).

    This is half the mean squared distance over ordered pairs; NaN for users with one vector.
    """
    d = pairwise_user_distances(users)
    pairs = _pair_mask(users, valid)
    if pairs is not None:
        d = d * pairs
    c = users.shape[1] if valid is None else valid.sum(1)
    return 2.0 * d.sum(1) / (2 * c * (c - 1))


def dcrs_paper(
    users: torch.Tensor, delta1: float, delta2: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """DCRS as the paper writes it: mean_u ψ_u, ψ_u = max(0, δ1 − δ_u) + max(0, δ_u − δ2).

    Users with a single vector (adaptive C_u = 1) have no diversity and are left out.
    """
    delta = user_diversity(users, valid)
    keep = torch.isfinite(delta)
    if not keep.any():
        return users.sum() * 0.0
    delta = delta[keep]
    return (F.relu(delta1 - delta) + F.relu(delta - delta2)).mean()
