"""Kernelized low-rank updates and competition-based sparsification (the math of SNELL).

All functions are batched over a leading *split* axis ``S``: a fused linear such as timm's
``attn.qkv`` (n -> 3n) holds three independent n x n updates (q, k, v), each with its own
threshold. Shapes use ``n`` = in_features, ``m'`` = out_features / S, ``P`` = kernel pieces,
``d`` = r / P.

Kernels (``a``, ``b`` are rows of the input-side / output-side factors):

* ``piecewise_linear`` (SNELL's default): ``ΔW[i, j] = Σ_p α_p ‖A_p[i] − B_p[j]‖_q`` with the
  *non-squared* ``q``-norm distance (``q = norm_p = 2``) and ``α = (+0.1, −0.1)``.
* ``linear``: ``ΔW = A Bᵀ`` over the full r-vectors (LoRA's kernel, rank ≤ r).
* ``rbf``: ``α · exp(−β ‖a − b‖²) + γ``;  ``sigmoid``: ``α · σ(β aᵀb) + γ`` (ablations, App. B).

Gates (``s`` = fraction of entries zeroed, per split):

* ``official`` (released code): ``τ = quantile_s(|ΔW|)`` (linear interpolation),
  ``M = 1[|ΔW| > τ]``, ``ΔWˢ = ΔW ⊙ sg(|ΔW| ⊙ M)`` so ``∂L/∂ΔW = G ⊙ |ΔW| ⊙ M``.
* ``paper_soft`` (paper Eq. 5): ``τ = ⌈s·N⌉``-th smallest ``|ΔW|``,
  ``ΔWˢ = ΔW ⊙ max(|ΔW| − τ, 0)`` with the gradient flowing through both factors, so
  ``∂L/∂ΔW = G ⊙ (2|ΔW| − τ) ⊙ M``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "GATES",
    "KERNELS",
    "gate_delta",
    "kernel_delta",
    "magnitude_threshold",
]

KERNELS = ("piecewise_linear", "linear", "rbf", "sigmoid")
GATES = ("official", "paper_soft")


def _full_vectors(F: Tensor) -> Tensor:
    """(S, P, rows, d) -> (S, rows, P·d): concatenate the pieces back into r-vectors."""
    S, P, rows, d = F.shape
    return F.permute(0, 2, 1, 3).reshape(S, rows, P * d)


def kernel_delta(
    A: Tensor, B: Tensor, coeffs: Tensor | None, kernel: str = "piecewise_linear", norm_p=2.0
) -> Tensor:
    """The raw kernel matrix ``ΔW`` in (in x out) orientation.

    Args:
        A: input-side factors, (S, P, n, d).
        B: output-side factors, (S, P, m', d).
        coeffs: (S, P) piece coefficients α for ``piecewise_linear``; (S, 3) = (α, β, γ) for
            ``rbf`` / ``sigmoid``; ignored for ``linear``.
    Returns:
        (S, n, m').
    """
    if kernel == "piecewise_linear":
        dist = torch.cdist(A, B, p=norm_p)  # (S, P, n, m'), non-squared distances
        return torch.einsum("sp,spnm->snm", coeffs, dist)
    a, b = _full_vectors(A), _full_vectors(B)
    if kernel == "linear":
        return a @ b.transpose(1, 2)
    alpha, beta, gamma = (coeffs[:, i, None, None] for i in range(3))
    if kernel == "rbf":
        return alpha * torch.exp(-beta * torch.cdist(a, b, p=2.0).square()) + gamma
    if kernel == "sigmoid":
        return alpha * torch.sigmoid(beta * (a @ b.transpose(1, 2))) + gamma
    raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")


def magnitude_threshold(mag: Tensor, sparsity: float, mode: str = "quantile") -> Tensor:
    """Per-row threshold of ``mag`` (S, N) as (S, 1).

    ``quantile``: ``torch.quantile(mag, s, dim=1)`` with linear interpolation, computed with one
    ``kthvalue`` and one pass for the next order statistic, so it works above 2^24 elements
    (where ``torch.quantile`` refuses).
    ``kth``: the ``⌈s·N⌉``-th smallest value (paper Eq. 5).
    """
    N = mag.shape[-1]
    if mode == "kth":
        k = min(max(math.ceil(sparsity * N), 1), N)
        return mag.kthvalue(k, dim=-1, keepdim=True).values
    pos = sparsity * (N - 1)
    lo = math.floor(pos)
    frac = pos - lo
    below = mag.kthvalue(lo + 1, dim=-1, keepdim=True).values
    if frac == 0.0 or lo + 1 >= N:
        return below
    # the (lo+2)-th smallest without a second selection: ``below`` again where it is tied,
    # otherwise the smallest value above it
    tied = (mag <= below).sum(-1, keepdim=True) >= lo + 2
    nxt = mag.masked_fill(mag <= below, math.inf).amin(-1, keepdim=True)
    return torch.lerp(below, torch.where(tied, below, nxt), frac)


def gate_delta(delta: Tensor, sparsity: float, gate: str = "official") -> Tensor:
    """Competition-based sparsification of ``delta`` (S, n, m'), one threshold per split.

    ``sparsity = 0`` returns ``delta`` unchanged (plain kernelized LoRA, as the code swaps in
    ``KLoRA``). No mask or index outlives this call.
    """
    if sparsity == 0.0:
        return delta
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    S = delta.shape[0]
    mag = delta.detach().abs()
    flat = mag.reshape(S, -1)
    if gate == "official":
        tau = magnitude_threshold(flat, sparsity, "quantile").view(S, 1, 1)
        return delta * torch.where(mag > tau, mag, 0.0)  # gate is detached: sg(|ΔW| ⊙ M)
    if gate == "paper_soft":
        tau = magnitude_threshold(flat, sparsity, "kth").view(S, 1, 1)
        return delta * torch.relu(delta.abs() - tau)
    raise ValueError(f"unknown gate {gate!r}; choose one of {GATES}")
