r"""The RCPMOD training losses for one view pair (a, b) (official ``loss.py`` semantics).

With :math:`h = [h^a; h^b] \in \mathbb{R}^{2N \times d}` (rows L2-normalised), temperature τ and
an optional memory bank :math:`m \in \mathbb{R}^{2M \times d}` (normalised), for anchor r with
twin t(r) (r ± N):

.. math::

    \ell_r = -\frac{h_r \cdot h_{t(r)}}{τ}
             + \log\Big(\sum_{c \ne r} e^{h_r \cdot h_c / τ} + \sum_{m} e^{h_r \cdot m / τ}\Big),
    \qquad L_{\text{NT-Xent}} = \frac{1}{2N}\sum_r \ell_r

(SimCLR's 2N form: the positive and the 2N − 2 other batch rows are in the denominator, the
memory rows are extra negatives; this is the cross entropy with the positive at index 0 that
the official ``contrastive_loss_oa`` computes).

* :func:`reconstruction`: :math:`\frac{1}{|P|}\sum_{i \in P} \lVert x_i − \hat x_i \rVert_2^2`
  (sum over features, mean over present samples).
* :func:`koleo`: :math:`−\frac{1}{n}\sum_i \log(n \lVert z_i − z_{j(i)} \rVert)`,
  :math:`j(i) = \arg\max_{j \ne i} \langle z_i, z_j\rangle` (chosen without gradient).
* :func:`triplet`: :math:`\frac{1}{n}\sum_i \mathrm{relu}(\lVert z_i − z^+_i\rVert − \lVert z_i −
  z^-_i\rVert)` (margin 0).
* :func:`spreading_weight`: the warm-up schedule w(t) of the KoLeo + triplet term.

Distances use ``torch.nn.functional.pairwise_distance`` (ε = 1e-6 added to the difference,
as ``nn.PairwiseDistance`` in the official code).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "koleo",
    "nt_xent",
    "nt_xent_per_row",
    "reconstruction",
    "spreading_weight",
    "triplet",
]


def nt_xent_per_row(
    h_a: torch.Tensor,
    h_b: torch.Tensor,
    memory: torch.Tensor | None = None,
    temperature: float = 0.5,
) -> torch.Tensor:
    """Per-anchor NT-Xent losses ``(..., 2N)`` for normalised ``h_a, h_b`` of shape ``(..., N, d)``.

    ``memory``: ``(2M, d)`` extra negatives (shared over any leading batch dimensions).
    Rows ``0..N−1`` are the view-a anchors, ``N..2N−1`` the view-b anchors.
    """
    n = h_a.shape[-2]
    h = torch.cat([h_a, h_b], dim=-2)
    sim = h @ h.transpose(-1, -2) / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=h.device)
    pos = torch.cat([torch.diagonal(sim, n, -2, -1), torch.diagonal(sim, -n, -2, -1)], dim=-1)
    logits = sim.masked_fill(eye, float("-inf"))
    if memory is not None and memory.shape[0] > 0:
        logits = torch.cat([logits, h @ memory.T / temperature], dim=-1)
    return torch.logsumexp(logits, dim=-1) - pos


def nt_xent(h_a, h_b, memory=None, temperature: float = 0.5) -> torch.Tensor:
    """Mean NT-Xent over the 2N anchors (averaged over any leading batch dimensions too)."""
    return nt_xent_per_row(h_a, h_b, memory, temperature).mean()


def reconstruction(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Squared error summed over features, mean over rows (0 for no rows)."""
    if x.shape[0] == 0:
        return x.new_zeros(())
    return (x_hat - x).square().sum(-1).mean()


def koleo(z: torch.Tensor) -> torch.Tensor:
    """KoLeo entropy estimate on unnormalised latents; nearest neighbour by inner product."""
    n = z.shape[0]
    if n < 2:
        return z.new_zeros(())
    with torch.no_grad():
        dots = z @ z.T
        dots.fill_diagonal_(float("-inf"))
        j = dots.argmax(1)
    d = F.pairwise_distance(z, z[j])
    return -torch.log(n * d).mean()


def triplet(z: torch.Tensor, z_pos: torch.Tensor, z_neg: torch.Tensor) -> torch.Tensor:
    """Margin-0 triplet loss, mean over rows (0 for no rows)."""
    if z.shape[0] == 0:
        return z.new_zeros(())
    return F.relu(F.pairwise_distance(z, z_pos) - F.pairwise_distance(z, z_neg)).mean()


def spreading_weight(
    epoch: int,
    warmup_max: float,
    final: float,
    schedule_epochs: int,
    warmup_epochs: int = 100,
) -> float:
    """w(t): ``linspace(0, warmup_max, warmup_epochs)`` then ``linspace(warmup_max, final,
    schedule_epochs − warmup_epochs)``, indexed by epoch (the official ``linear_scheduler``);
    ``final`` after the schedule ends (where the official array would run out)."""
    if epoch < 0:
        raise ValueError("epoch must be >= 0")
    if epoch < warmup_epochs:
        return float(np.linspace(0.0, warmup_max, warmup_epochs)[epoch])
    rest = schedule_epochs - warmup_epochs
    if rest <= 0 or epoch - warmup_epochs >= rest:
        return float(final)
    return float(np.linspace(warmup_max, final, rest)[epoch - warmup_epochs])
