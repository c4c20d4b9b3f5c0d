"""The weight-shared recurrent N² cell: pseudo-node adaptation, local and global message passing."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from n2gnn.proximity import Proximity


class NL(nn.Sequential):
    r"""The paper's :math:`NL(\cdot)`: ``Linear -> LeakyReLU(0.01) -> Dropout(p)``."""

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0):
        super().__init__(
            nn.Linear(in_features, out_features), nn.LeakyReLU(0.01), nn.Dropout(dropout)
        )

    def reset_parameters(self) -> None:
        self[0].reset_parameters()


class N2Cell(nn.Module):
    r"""One N² step, applied :math:`L` times with the same weights (paper Eqs. 4–10, code order).

    Graph nodes carry a state :math:`Q\in\mathbb R^{B\times n\times q}` and a message
    :math:`M\in\mathbb R^{B\times n\times d}`; pseudo nodes a position :math:`R` (``(1, np, q)``
    before the first step, ``(B, k, np, q)`` after). With :math:`N_b` the node count of graph
    :math:`b` and :math:`\hat A = D^{-1/2}(A+I)D^{-1/2}`:

    .. math::
        \textbf{(a)}\;& G = \psi_{c1}(R,Q)\,M / N_b,\quad \hat G = \psi_{r1}(R,R)\,G,\quad
            \hat R = \mathrm{LN}_q(R + NL_{\Delta 1}(\hat G)),\quad M_p = NL_{v1}(\hat G),\\
        & \hat M_g = \psi_{i}(Q, \hat R)\, M_p \\
        \textbf{(b)}\;& M_{loc} = \hat A\,[M \,\|\, \hat M_g \,\|\, Q],\quad
            \hat Q = \mathrm{LN}_q(Q + NL_h(M_{loc})) \\
        \textbf{(c)}\;& G_2 = [\psi_{c2}(\hat R,\hat Q)\,M_{loc}/N_b \,\|\, M_p],\quad
            \hat G_2 = \psi_{r2}(\hat R,\hat R)\,G_2,\quad
            R' = \mathrm{LN}_q(\hat R + NL_{\Delta 2}(\hat G_2)),\\
        & M_{gl} = \psi_{d}(\hat Q, R')\, NL_{v2}(\hat G_2),\quad
            M' = \mathrm{LN}_d(M + NL_f(M_{gl})),\quad Q' = \mathrm{LN}_q(\hat Q + M_{gl})

    The displacement heads :math:`NL_{\Delta}` output :math:`k q` values per pseudo node, reshaped
    to the :math:`k` pieces; the first step's broadcast makes :math:`R` per graph. Pathways
    :math:`\psi(\cdot)` are recomputed from the moved positions at every sub-step. Graph-node
    outputs are multiplied by the node mask.

    Paper-vs-code switches (defaults follow the official code):

    * ``normalize_by_nodes``: divide node→pseudo sums by :math:`N_b` (code; paper Eq. 4 does not).
    * ``concat_pseudo_messages``: the :math:`\| M_p` in :math:`G_2` (code only).
    * ``residual="code"`` as above; ``"paper"``: :math:`M_{gl}\in\mathbb R^{d}`,
      :math:`M' = \mathrm{LN}_d(M + M_{gl})`, :math:`Q' = \mathrm{LN}_q(\hat Q + NL_f(M_{gl}))`.

    Ablations: ``global_mp=False`` zeroes :math:`M_{gl}` (step (c) no longer reaches graph nodes);
    ``node_to_pseudo=False`` zeroes both node→pseudo pathways :math:`\psi_{c1}, \psi_{c2}`.

    Args:
        hidden: :math:`d`, message width.
        state: :math:`q`, position width.
        pieces: :math:`k`.
        dropout: dropout inside every :math:`NL`.
        clip: ψ row-sum clip.

    Shapes:
        M ``(B, n, d)``, Q ``(B, n, q)``, R ``(1, np, q)`` or ``(B, k, np, q)``, adj a sparse
        ``(B n, B n)`` operator over the padded node index, mask ``(B, n)``, num_nodes
        ``(B, 1, 1)``; returns ``(M', Q', R')`` with R' ``(B, k, np, q)``.
    """

    def __init__(
        self,
        hidden: int = 128,
        state: int = 64,
        pieces: int = 8,
        dropout: float = 0.0,
        clip: float | None = 1e4,
        *,
        normalize_by_nodes: bool = True,
        concat_pseudo_messages: bool = True,
        residual: Literal["code", "paper"] = "code",
        global_mp: bool = True,
        node_to_pseudo: bool = True,
    ):
        super().__init__()
        if residual not in ("code", "paper"):
            raise ValueError(f"residual must be 'code' or 'paper', got {residual!r}")
        d, q, k = hidden, state, pieces
        self.hidden, self.state, self.pieces = d, q, k
        self.normalize_by_nodes = normalize_by_nodes
        self.concat_pseudo_messages = concat_pseudo_messages
        self.residual = residual
        self.global_mp = global_mp
        self.node_to_pseudo = node_to_pseudo

        names = ("collect1", "refine1", "inspect", "collect2", "refine2", "dispatch")
        self.psi = nn.ModuleDict({name: Proximity(k, clip) for name in names})
        g2 = 2 * d + q + (d if concat_pseudo_messages else 0)
        gl = q if residual == "code" else d  # width of the global message M_gl
        self.disp1 = NL(d, k * q, dropout)
        self.val1 = NL(d, d, dropout)
        self.local = NL(2 * d + q, q, dropout)
        self.disp2 = NL(g2, k * q, dropout)
        self.val2 = NL(g2, gl, dropout)
        self.out = NL(q, d, dropout) if residual == "code" else NL(d, q, dropout)
        self.norm_pseudo1 = nn.LayerNorm(q)
        self.norm_state1 = nn.LayerNorm(q)
        self.norm_pseudo2 = nn.LayerNorm(q)
        self.norm_state2 = nn.LayerNorm(q)
        self.norm_message = nn.LayerNorm(d)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def _move(self, R: Tensor, delta: Tensor, norm: nn.LayerNorm) -> Tensor:
        """R + Δ with Δ ``(B, np, k q)`` reshaped to ``(B, k, np, q)``; R broadcasts."""
        B, np_, _ = delta.shape
        delta = delta.view(B, np_, self.pieces, self.state).transpose(1, 2)
        if R.dim() == 3:  # shared initial positions (1, np, q) -> one piece, every graph
            R = R.unsqueeze(1)
        return norm(R + delta)

    def forward(
        self, M: Tensor, Q: Tensor, R: Tensor, adj: Tensor, mask: Tensor, num_nodes: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        B, n, _ = M.shape
        mask3 = mask.unsqueeze(-1).to(M.dtype)
        r_pieces = R.dim() == 4
        norm = num_nodes if self.normalize_by_nodes else torch.ones_like(num_nodes)
        psi = self.psi

        # (a) pseudo-node adaptation
        E_np = psi["collect1"](R, Q, x_pieces=r_pieces)  # (B, np, n)
        if not self.node_to_pseudo:
            E_np = torch.zeros_like(E_np)
        G = E_np @ M / norm  # (B, np, d)
        G_hat = psi["refine1"](R, R, r_pieces, r_pieces) @ G
        R_hat = self._move(R, self.disp1(G_hat), self.norm_pseudo1)  # (B, k, np, q)
        M_p = self.val1(G_hat)  # (B, np, d)
        M_g = psi["inspect"](Q, R_hat, y_pieces=True) @ M_p  # (B, n, d)

        # (b) local message passing with Â over the padded index space
        Z = torch.cat([M, M_g, Q], dim=-1)
        with torch.autocast(Z.device.type, enabled=False):  # sparse Â·Z in fp32 (any precision)
            M_loc = torch.sparse.mm(adj, Z.reshape(B * n, -1).float()).view(B, n, -1)
        Q_hat = self.norm_state1(Q + self.local(M_loc)) * mask3

        # (c) global message passing through the moved pseudo nodes
        E_np2 = psi["collect2"](R_hat, Q_hat, x_pieces=True)
        if not self.node_to_pseudo:
            E_np2 = torch.zeros_like(E_np2)
        G2 = E_np2 @ M_loc / norm
        if self.concat_pseudo_messages:
            G2 = torch.cat([G2, M_p], dim=-1)
        G2_hat = psi["refine2"](R_hat, R_hat, True, True) @ G2
        R_new = self._move(R_hat, self.disp2(G2_hat), self.norm_pseudo2)
        M_gl = psi["dispatch"](Q_hat, R_new, y_pieces=True) @ self.val2(G2_hat)
        if not self.global_mp:
            M_gl = torch.zeros_like(M_gl)
        if self.residual == "code":
            M_new = self.norm_message(M + self.out(M_gl))
            Q_new = self.norm_state2(Q_hat + M_gl)
        else:
            M_new = self.norm_message(M + M_gl)
            Q_new = self.norm_state2(Q_hat + self.out(M_gl))
        return M_new * mask3, Q_new * mask3, R_new
