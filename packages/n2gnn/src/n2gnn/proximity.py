"""The proximity ψ: a signed, unnormalised, λ-weighted inner product between node positions."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Proximity(nn.Module):
    r"""Learned proximity :math:`\psi(a,b) = \sum_{c=1}^k \lambda_c\langle a^c, b^c\rangle/(kq)`.

    Paper Eq. 1 writes :math:`\psi(a,b)=\sum_i\lambda_i\langle NL_i(a), NL_i(b)\rangle`; the
    official code realises the :math:`k` "pieces" as the pseudo-node positions produced by the
    displacement head, so an input either has one piece, shape ``(..., m, q)``, or :math:`k`
    pieces, shape ``(..., k, m, q)``. With :math:`\lambda\in\mathbb{R}^k` (one per instance, init
    :math:`\mathcal N(0,1)`):

    * one piece each: :math:`\psi = \bar\lambda\, X Y^\top / q` (:math:`\bar\lambda` = mean of λ);
    * one side with pieces: :math:`\psi = X (\sum_c \lambda_c Y^c)^\top / (kq)` — a single
      ``(a, b)`` matrix, never a ``(k, a, b)`` stack;
    * both sides with pieces: :math:`\psi = \sum_c \lambda_c X^c Y^{c\top} / (kq)`.

    No softmax and no row normalisation: ψ takes both signs. A no-grad safety clip rescales any row
    whose sum exceeds ``clip`` in magnitude to sum to ``±clip`` (the factor carries no gradient).

    Args:
        pieces: :math:`k`, the number of pieces (length of λ).
        clip: the row-sum bound (``None`` disables the clip).

    Shapes:
        X ``(*, a, q)`` or ``(*, k, a, q)``; Y ``(*, b, q)`` or ``(*, k, b, q)``, batch dims ``*``
        broadcast; output ``(*, a, b)``.
    """

    def __init__(self, pieces: int, clip: float | None = 1e4):
        super().__init__()
        self.pieces = pieces
        self.clip = clip
        self.weight = nn.Parameter(torch.empty(pieces))  # λ
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)

    def _mix(self, Z: Tensor) -> Tensor:
        """Σ_c λ_c Z^c / k over the piece dim of ``(*, k, m, q)`` -> ``(*, m, q)``."""
        return torch.einsum("...kmq,k->...mq", Z, self.weight) / self.pieces

    def forward(
        self, X: Tensor, Y: Tensor, x_pieces: bool = False, y_pieces: bool = False
    ) -> Tensor:
        q = X.shape[-1]
        if x_pieces and y_pieces:
            psi = torch.einsum("...kaq,...kbq,k->...ab", X, Y, self.weight) / (self.pieces * q)
        elif x_pieces:
            psi = self._mix(X) @ Y.transpose(-1, -2) / q
        elif y_pieces:
            psi = X @ self._mix(Y).transpose(-1, -2) / q
        else:
            psi = self.weight.mean() * (X @ Y.transpose(-1, -2)) / q
        if self.clip is not None:
            with torch.no_grad():  # the row sums in fp32, also under bf16/fp16 autocast
                row = psi.float().sum(-1, keepdim=True).abs()
                scale = (self.clip / row).clamp(max=1.0).to(psi.dtype)
            psi = psi * scale
        return psi

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}, clip={self.clip}"
