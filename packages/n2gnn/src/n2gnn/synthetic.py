"""Seeded offline tasks: a topology-misleading SBM node task and a majority-colour graph task."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

from labcore.data import split_indices


def _mask(idx: np.ndarray, n: int) -> Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[torch.from_numpy(idx)] = True
    return m


def sbm_heterophily(
    homophily: float = 0.1,
    num_classes: int = 4,
    nodes_per_class: int = 750,
    avg_degree: float = 15.0,
    num_features: int = 32,
    noise: float = 2.0,
    seed: int = 0,
    feature_seed: int = 0,
) -> Data:
    r"""A stochastic-block-model node task whose edges mislead a homophilous GNN.

    Labels are balanced; node features are :math:`x = \mu_y + \sigma\,\varepsilon`,
    :math:`\mu_c\sim\mathcal N(0, I)`, :math:`\varepsilon\sim\mathcal N(0, I)` (``feature_seed``
    fixes the means and noise, so rows with different ``homophily`` share features). Undirected
    edges: ``n·avg_degree/2`` draws, a fraction ``homophily`` inside a class and the rest between
    uniformly chosen different classes (0.25 with four classes = label-independent edges).
    Split: random 60/20/20 (``train_mask``, ``val_mask``, ``test_mask``, seeded by ``seed``).
    """
    if not 0.0 <= homophily <= 1.0:
        raise ValueError(f"homophily must be in [0, 1], got {homophily}")
    C, m = num_classes, nodes_per_class
    n = C * m
    y = torch.arange(C).repeat_interleave(m)
    g = torch.Generator().manual_seed(feature_seed)
    means = torch.randn(C, num_features, generator=g)
    x = means[y] + noise * torch.randn(n, num_features, generator=g)

    g = torch.Generator().manual_seed(seed)
    E = round(n * avg_degree / 2)
    src = torch.randint(0, n, (E,), generator=g)
    same = torch.rand(E, generator=g) < homophily
    shift = torch.randint(1, C, (E,), generator=g)  # another class, uniformly
    dst_class = torch.where(same, y[src], (y[src] + shift) % C)
    dst = dst_class * m + torch.randint(0, m, (E,), generator=g)  # nodes are sorted by class
    ei, _ = remove_self_loops(torch.stack([src, dst]))
    ei = coalesce(to_undirected(ei, num_nodes=n), num_nodes=n)

    tr, va, te = split_indices(n, [0.6, 0.2, 0.2], seed=seed)
    return Data(
        x=x,
        edge_index=ei,
        y=y,
        train_mask=_mask(tr, n),
        val_mask=_mask(va, n),
        test_mask=_mask(te, n),
    )


def edge_homophily(data: Data) -> float:
    """Fraction of edges joining two nodes of the same label."""
    return float((data.y[data.edge_index[0]] == data.y[data.edge_index[1]]).float().mean())


def majority_colour_graphs(
    num_graphs: int = 1400,
    min_nodes: int = 10,
    max_nodes: int = 60,
    avg_degree: float = 4.0,
    noise_dims: int = 6,
    margin: float = 0.06,
    seed: int = 0,
) -> list[Data]:
    """Erdős–Rényi graphs whose label is the majority node colour.

    Each node has a colour (one-hot, 2 dims) and ``noise_dims`` Gaussian features; a graph's colour
    rate is drawn from U(0.2, 0.8) and graphs with ``|fraction − 0.5| < margin`` are rejected, so
    the label needs counting over the whole graph. Edges: ``round(n·avg_degree/2)`` uniform pairs
    within each graph, undirected, no self-loops. All graphs are generated in one vectorised pass.
    """
    rng = torch.Generator().manual_seed(seed)
    draw = 2 * num_graphs + 64  # enough that the rejection step keeps num_graphs
    sizes = torch.randint(min_nodes, max_nodes + 1, (draw,), generator=rng)
    rate = 0.2 + 0.6 * torch.rand(draw, generator=rng)
    graph_of = torch.repeat_interleave(torch.arange(draw), sizes)
    colour = (torch.rand(graph_of.numel(), generator=rng) < rate[graph_of]).long()
    frac = torch.zeros(draw).index_add_(0, graph_of, colour.float()) / sizes
    keep = torch.nonzero((frac - 0.5).abs() >= margin).squeeze(1)[:num_graphs]
    if keep.numel() < num_graphs:
        raise RuntimeError("rejection sampling kept too few graphs; lower the margin")

    old_offsets = (torch.cumsum(sizes, 0) - sizes)[keep]
    sizes = sizes[keep]
    offsets = torch.cumsum(sizes, 0) - sizes
    node_old = torch.repeat_interleave(old_offsets, sizes) + (
        torch.arange(int(sizes.sum())) - torch.repeat_interleave(offsets, sizes)
    )
    colour = colour[node_old]
    N = colour.numel()
    x = torch.cat(
        [torch.nn.functional.one_hot(colour, 2).float(), torch.randn(N, noise_dims, generator=rng)],
        1,
    )
    y = (frac[keep] > 0.5).long()

    n_edges = torch.round(sizes.float() * avg_degree / 2).long()
    edge_graph = torch.repeat_interleave(torch.arange(num_graphs), n_edges)
    span, base = sizes[edge_graph], offsets[edge_graph]
    u = base + (torch.rand(edge_graph.numel(), generator=rng) * span).long()
    v = base + (torch.rand(edge_graph.numel(), generator=rng) * span).long()
    ei, _ = remove_self_loops(torch.stack([u, v]))
    ei = coalesce(to_undirected(ei, num_nodes=N), num_nodes=N)

    node_counts = sizes.tolist()
    edge_counts = torch.bincount(
        torch.repeat_interleave(torch.arange(num_graphs), sizes)[ei[0]], minlength=num_graphs
    ).tolist()
    xs, eis = x.split(node_counts), ei.split(edge_counts, dim=1)
    return [
        Data(x=xi, edge_index=e - o, y=yi.view(1))
        for xi, e, o, yi in zip(xs, eis, offsets.tolist(), y)
    ]
