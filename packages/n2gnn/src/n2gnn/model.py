"""PyG-native N² models: ``N2Node`` (node logits) and ``N2Graph`` (graph logits)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch_geometric.utils import add_remaining_self_loops, scatter, to_dense_batch

from labcore.cli import UserError
from n2gnn import _validate as check
from n2gnn.cell import NL, N2Cell
from n2gnn.proximity import Proximity


@dataclass
class N2Config:
    """Hyper-parameters of an N² model (defaults: the official CLI defaults)."""

    in_channels: int  # node feature width
    out_channels: int  # number of classes / tasks
    edge_dim: int | None = None  # edge feature width (summed per node into the input)
    hidden: int = 128  # d, message width
    state: int = 64  # q, position/state width
    pieces: int = 8  # k, pieces per pseudo node
    num_pseudo: int = 256  # np, pseudo nodes
    num_steps: int = 4  # L, applications of the one shared cell
    dropout: float = 0.4  # dropout inside every NL
    class_pieces: int = 1  # nc, pieces per class node (1, or k as for ogbg-molpcba)
    clip: float | None = 1e4  # ψ row-sum clip
    normalize_by_nodes: bool = True  # /N_b on node→pseudo sums (code; paper: False)
    concat_pseudo_messages: bool = True  # ‖ M_p in the second refine (code only)
    residual: Literal["code", "paper"] = "code"  # where NL sits in the final update
    global_mp: bool = True  # ablation: False zeroes M_gl
    node_to_pseudo: bool = True  # ablation: False cuts node→pseudo pathways

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "hidden", "state", "pieces", "num_pseudo",
                     "num_steps"):  # fmt: skip
            check.integer(name, getattr(self, name))
        if self.edge_dim is not None:
            check.integer("edge_dim", self.edge_dim)
        check.real("dropout", self.dropout, low=0.0, high=1.0, high_open=True)
        check.integer("class_pieces", self.class_pieces)
        if self.class_pieces not in (1, self.pieces):
            raise UserError(
                f"class_pieces must be 1 or pieces={self.pieces}, got {self.class_pieces}"
            )
        if self.clip is not None:
            check.real("clip", self.clip, low=0.0, low_open=True)
        if self.residual not in ("code", "paper"):
            raise UserError(f"residual must be 'code' or 'paper', got {self.residual!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> N2Config:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def official_parameter_count(model: nn.Module) -> int:
    """Parameter count as the official code reports it.

    The official model also builds two modules it never uses in forward, a d×d ``Linear``
    ("edge_wise_ff", d² + d) and a 6×d ``Embedding``; they are left out here and added back.
    """
    d = model.config.hidden
    own = sum(p.numel() for p in model.parameters())
    return own + d * d + d + 6 * d


def edge_sum_features(edge_index: Tensor, edge_attr: Tensor, num_nodes: int) -> Tensor:
    """Σ of edge features per source node after adding remaining self-loops (their features = 1).

    ``edge_attr`` ``(E,)`` or ``(E, F)`` -> ``(N, F)``.
    """
    if edge_attr.dim() == 1:
        edge_attr = edge_attr.unsqueeze(-1)
    ei, ea = add_remaining_self_loops(edge_index, edge_attr.float(), 1.0, num_nodes)
    return scatter(ea, ei[0], dim=0, dim_size=num_nodes, reduce="sum")


def gcn_operator(edge_index: Tensor, index: Tensor, num_nodes: int, size: int) -> Tensor:
    r"""Sparse :math:`\hat A = D^{-1/2}(A+I)D^{-1/2}` placed on the padded index ``index`` (N,).

    As the official code: self-loops via ``add_remaining_self_loops``, degree counted over the
    row index, :math:`(\hat A Z)_i = \sum_j \hat A_{ij} Z_j` for edges ``(i, j)``. Returns a
    coalesced sparse ``(size, size)`` tensor (``size`` = B·n).
    """
    ei, _ = add_remaining_self_loops(edge_index, num_nodes=num_nodes)
    row, col = ei
    deg = scatter(torch.ones_like(row, dtype=torch.float), row, 0, dim_size=num_nodes)
    dinv = deg.pow(-0.5).masked_fill_(deg == 0, 0.0)
    w = dinv[row] * dinv[col]
    idx = torch.stack([index[row], index[col]])
    return torch.sparse_coo_tensor(idx, w, (size, size), check_invariants=False).coalesce()


class _N2Base(nn.Module):
    def __init__(self, config: N2Config):
        super().__init__()
        c = config
        self.config = c
        d_in = c.in_channels + (c.edge_dim or 0)
        self.encode_state = NL(d_in, c.state, c.dropout)
        self.encode_message = NL(d_in, c.hidden, c.dropout)
        self.pseudo = nn.Parameter(torch.empty(1, c.num_pseudo, c.state))  # R0
        self.classes = nn.Parameter(torch.empty(c.class_pieces, c.out_channels, c.state))  # C
        self.cell = N2Cell(
            c.hidden,
            c.state,
            c.pieces,
            c.dropout,
            c.clip,
            normalize_by_nodes=c.normalize_by_nodes,
            concat_pseudo_messages=c.concat_pseudo_messages,
            residual=c.residual,
            global_mp=c.global_mp,
            node_to_pseudo=c.node_to_pseudo,
        )
        self.psi_out = Proximity(c.pieces, c.clip)

    def reset_parameters(self) -> None:
        self.encode_state.reset_parameters()
        self.encode_message.reset_parameters()
        nn.init.normal_(self.pseudo)
        nn.init.normal_(self.classes)
        self.cell.reset_parameters()
        self.psi_out.reset_parameters()

    def _check(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None) -> None:
        c = self.config
        if x.dim() != 2 or x.size(1) != c.in_channels:
            raise UserError(f"x must have shape (num_nodes, {c.in_channels}), got {tuple(x.shape)}")
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise UserError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
        if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= x.size(0)):
            raise UserError(
                f"edge_index refers to node {int(edge_index.max())} but x has {x.size(0)} nodes"
                if edge_index.max() >= x.size(0)
                else "edge_index has negative node indices"
            )
        if (c.edge_dim is None) != (edge_attr is None):
            raise UserError(
                f"the model was built with edge_dim={c.edge_dim} but edge_attr is "
                f"{'missing' if edge_attr is None else 'given'}"
            )
        if edge_attr is not None:
            width = 1 if edge_attr.dim() == 1 else edge_attr.size(-1)
            if edge_attr.size(0) != edge_index.size(1) or width != c.edge_dim:
                raise UserError(
                    f"edge_attr must have shape ({edge_index.size(1)}, {c.edge_dim}), "
                    f"got {tuple(edge_attr.shape)}"
                )

    def propagate_states(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor | None = None,
        batch: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Encode and run the cell L times; returns dense ``(M, Q, R, mask)`` after step L."""
        self._check(x, edge_index, edge_attr)
        N = x.size(0)
        if batch is None:
            batch = x.new_zeros(N, dtype=torch.long)
        x = x.float()
        if edge_attr is not None:
            x = torch.cat([x, edge_sum_features(edge_index, edge_attr, N)], dim=-1)
        Q, mask = to_dense_batch(self.encode_state(x), batch)
        M, _ = to_dense_batch(self.encode_message(x), batch)
        B, n = mask.shape
        index = torch.arange(B * n, device=x.device).view(B, n)[mask]  # node -> padded slot
        adj = gcn_operator(edge_index, index, N, B * n)
        num_nodes = mask.sum(1).clamp(min=1).view(B, 1, 1).to(x.dtype)  # N_b
        R = self.pseudo
        for _ in range(self.config.num_steps):
            M, Q, R = self.cell(M, Q, R, adj, mask, num_nodes)
        return M, Q, R, mask

    def _class_logits(self, Q: Tensor) -> Tensor:
        """ψ_out(Q, C): ``(..., m, q)`` -> ``(..., m, ncls)``."""
        if self.config.class_pieces == 1:
            return self.psi_out(Q, self.classes)
        return self.psi_out(Q, self.classes, y_pieces=True)


class N2Node(_N2Base):
    r"""N² for node-level tasks: logits by proximity of each node's final state to class nodes.

    :math:`Q^0 = NL_q(x')`, :math:`M^0 = NL_m(x')` with :math:`x' = [x \,\|\, \sum_{u}
    e_{vu}]` (edge features summed per node when given); pseudo nodes start at shared learnable
    :math:`R^0\in\mathbb R^{np\times q}`; :math:`(M, Q, R) \leftarrow \mathrm{Cell}(M, Q, R)`
    :math:`L` times with one set of weights (:class:`~n2gnn.cell.N2Cell`); then
    :math:`\text{logits} = \psi_{out}(Q^L, C)` with learnable class nodes
    :math:`C\in\mathbb R^{nc\times ncls\times q}`. Graphs in a batch are padded with
    ``to_dense_batch``; each has its own pseudo nodes after step 1.

    Args:
        config: an :class:`N2Config`, or keyword arguments for one.

    Shapes:
        x ``(N, F)``, edge_index ``(2, E)``, edge_attr ``(E, F_e)`` or None, batch ``(N,)`` or
        None -> logits ``(N, ncls)`` (unnormalised: use log_softmax / BCE-with-logits).
    """

    def __init__(self, config: N2Config | None = None, **kwargs: Any):
        config = config or N2Config(**kwargs)
        super().__init__(config)
        self.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor | None = None,
        batch: Tensor | None = None,
    ) -> Tensor:
        _, Q, _, mask = self.propagate_states(x, edge_index, edge_attr, batch)
        return self._class_logits(Q)[mask]


class N2Graph(_N2Base):
    r"""N² for graph-level tasks: read out from the pseudo nodes only.

    As :class:`N2Node` up to :math:`R^L\in\mathbb R^{B\times k\times np\times q}`; each of the
    :math:`q` coordinates is a vector of length :math:`k\,np`, pooled by one shared
    :math:`NL_{pool}: \mathbb R^{k\,np}\to\mathbb R`, then
    :math:`h = \mathrm{LN}_q(NL_{pool}(R^L))\in\mathbb R^{B\times q}` and
    :math:`\text{logits} = \psi_{out}(h, C)`. Graph nodes never reach the head directly.

    Shapes:
        x ``(N, F)``, edge_index ``(2, E)``, edge_attr ``(E, F_e)`` or None, batch ``(N,)`` or
        None -> logits ``(B, ncls)``.
    """

    def __init__(self, config: N2Config | None = None, **kwargs: Any):
        config = config or N2Config(**kwargs)
        super().__init__(config)
        c = config
        self.pool = NL(c.pieces * c.num_pseudo, 1, c.dropout)
        self.pool_norm = nn.LayerNorm(c.state)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "pool"):
            self.pool.reset_parameters()
            self.pool_norm.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor | None = None,
        batch: Tensor | None = None,
    ) -> Tensor:
        _, _, R, _ = self.propagate_states(x, edge_index, edge_attr, batch)
        B = R.size(0)
        coords = R.permute(0, 3, 1, 2).reshape(B, self.config.state, -1)  # (B, q, k·np)
        h = self.pool_norm(self.pool(coords).squeeze(-1))  # (B, q)
        return self._class_logits(h.unsqueeze(1)).squeeze(1)
