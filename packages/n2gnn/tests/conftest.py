"""Fixtures: tiny datasets in PyG's on-disk formats, written to tmp_path."""

import numpy as np
import pytest


def _write_tu(root, name="TOY", num_graphs=12):
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = rng.integers(4, 9, num_graphs)
    indicator = np.repeat(np.arange(1, num_graphs + 1), sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    edges = []
    for off, n in zip(offsets, sizes):  # a ring per graph, both directions (1-indexed)
        for i in range(n):
            a, b = off + i + 1, off + (i + 1) % n + 1
            edges += [(a, b), (b, a)]
    np.savetxt(raw / f"{name}_A.txt", np.array(edges), fmt="%d", delimiter=", ")
    np.savetxt(raw / f"{name}_graph_indicator.txt", indicator, fmt="%d")
    np.savetxt(raw / f"{name}_graph_labels.txt", np.arange(num_graphs) % 2, fmt="%d")
    np.savetxt(raw / f"{name}_node_labels.txt", rng.integers(0, 3, sizes.sum()), fmt="%d")
    return sizes


@pytest.fixture
def write_tu():
    """Writes a TUDataset folder (ring graphs, node labels, alternating graph labels)."""
    return _write_tu
