"""Comparators built locally from PyG parts: MLP, GCN, GCN + mean pool, GIN, and dense ψ."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, global_mean_pool
from torch_geometric.nn.models import GIN


class MLP(nn.Module):
    """Two-layer perceptron on node features; ignores the graph."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, dropout: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_channels, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_channels),
        )

    def forward(self, x, edge_index=None, edge_attr=None, batch=None) -> Tensor:
        return self.net(x)


class GCN(nn.Module):
    """Stack of ``GCNConv`` (ReLU, dropout between); ``pool=True`` adds mean pooling + Linear."""

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        pool: bool = False,
    ):
        super().__init__()
        self.pool, self.dropout = pool, dropout
        dims = [in_channels] + [hidden] * (num_layers - (0 if pool else 1))
        self.convs = nn.ModuleList(GCNConv(a, b) for a, b in itertools.pairwise(dims))
        last = hidden if pool else dims[-1]
        self.head = nn.Linear(last, out_channels) if pool else GCNConv(last, out_channels)

    def forward(self, x, edge_index, edge_attr=None, batch=None) -> Tensor:
        for conv in self.convs:
            x = nn.functional.dropout(torch.relu(conv(x, edge_index)), self.dropout, self.training)
        if self.pool:
            return self.head(global_mean_pool(x, batch))
        return self.head(x, edge_index)


def gin_molpcba_baseline(in_channels: int = 12, out_channels: int = 128) -> nn.Module:
    """PyG's ``GIN`` at the OGB molpcba baseline size (5 layers, 300 hidden), for counting."""
    return GIN(in_channels, hidden_channels=300, num_layers=5, out_channels=out_channels)


def dense_global_step(Q: Tensor, M: Tensor, weight: Tensor, clip: float = 1e4) -> Tensor:
    r"""All-pairs ψ of N²'s form, materialised: :math:`\bar\lambda\,QQ^\top/q` (n×n) times M.

    The quadratic comparator for the scaling bench: same signed, unnormalised inner product and
    row clip as :class:`~n2gnn.proximity.Proximity`, but every node talks to every node.
    """
    psi = weight.mean() * (Q @ Q.T) / Q.size(-1)
    with torch.no_grad():
        scale = (clip / psi.sum(-1, keepdim=True).abs()).clamp(max=1.0)
    return (psi * scale) @ M
