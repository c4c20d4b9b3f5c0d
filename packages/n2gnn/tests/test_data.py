import numpy as np
import pytest
import torch
from torch_geometric.utils import is_undirected

from labcore.cli import UserError
from n2gnn.datasets import PRESETS, load_graph_dataset, load_node_dataset, tu_fold
from n2gnn.synthetic import edge_homophily, majority_colour_graphs, sbm_heterophily


@pytest.mark.parametrize("h", [0.1, 0.25, 0.6])
def test_sbm_homophily_degree_and_split(h):
    data = sbm_heterophily(h, nodes_per_class=200, seed=3)
    assert abs(edge_homophily(data) - h) < 0.03
    assert is_undirected(data.edge_index)
    assert abs(data.edge_index.size(1) / data.num_nodes - 15) < 0.5  # avg degree
    assert torch.bincount(data.y).tolist() == [200] * 4
    masks = torch.stack([data.train_mask, data.val_mask, data.test_mask])
    assert (masks.sum(0) == 1).all() and masks.sum(1).tolist() == [480, 160, 160]


def test_sbm_features_shared_across_homophily_and_seeded():
    a, b = sbm_heterophily(0.1, seed=1), sbm_heterophily(0.25, seed=1)
    torch.testing.assert_close(a.x, b.x)
    assert torch.equal(sbm_heterophily(0.1, seed=1).edge_index, a.edge_index)
    assert not torch.equal(sbm_heterophily(0.1, seed=2).edge_index, a.edge_index)


def test_majority_colour_graphs_labels_and_structure():
    graphs = majority_colour_graphs(200, seed=0)
    assert len(graphs) == 200
    for g in graphs:
        frac = g.x[:, 1].mean().item()  # colour bit 1
        assert abs(frac - 0.5) >= 0.06
        assert int(g.y) == int(frac > 0.5)
        assert 10 <= g.num_nodes <= 60
        assert g.edge_index.numel() == 0 or (
            0 <= g.edge_index.min() and g.edge_index.max() < g.num_nodes
        )
        assert is_undirected(g.edge_index, num_nodes=g.num_nodes)
        assert (g.edge_index[0] != g.edge_index[1]).all()
    mean_deg = np.mean([g.edge_index.size(1) / g.num_nodes for g in graphs])
    assert 3.0 < mean_deg < 4.2  # ≈ 4 before duplicate and self-loop removal
    assert 0.3 < np.mean([int(g.y) for g in graphs]) < 0.7


def test_tu_fold_is_a_stratified_partition():
    y = np.array([0] * 60 + [1] * 40)
    tests = []
    for fold in range(10):
        tr, va, te = tu_fold(y, fold)
        assert len(set(tr) | set(va) | set(te)) == 100
        assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
        assert y[te].mean() == pytest.approx(0.4, abs=0.11)
        tests.append(te)
    assert sorted(np.concatenate(tests).tolist()) == list(range(100))


def test_tu_loader_reads_the_on_disk_format(tmp_path, monkeypatch, write_tu):
    sizes = write_tu(tmp_path)
    monkeypatch.setitem(PRESETS, "TOY", PRESETS["PROTEINS"].__class__("tu", "TOY", "graph"))
    ds = load_graph_dataset("TOY", tmp_path)
    assert len(ds) == 12 and ds.num_features == 3
    assert [g.num_nodes for g in ds] == sizes.tolist()
    assert ds[3].edge_index.size(1) == 2 * sizes[3]


def write_heterophilous(root, n=30, splits=10):
    raw = root / "tolokers" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    masks = np.zeros((3, splits, n), dtype=bool)
    for s in range(splits):
        perm = rng.permutation(n)
        masks[0, s, perm[:15]], masks[1, s, perm[15:22]], masks[2, s, perm[22:]] = 1, 1, 1
    np.savez(
        raw / "tolokers.npz",
        node_features=rng.normal(size=(n, 5)).astype(np.float32),
        node_labels=rng.integers(0, 2, n),
        edges=rng.integers(0, n, (60, 2)),
        train_masks=masks[0],
        val_masks=masks[1],
        test_masks=masks[2],
    )
    return masks


def test_heterophilous_loader_uses_the_official_split(tmp_path):
    masks = write_heterophilous(tmp_path)
    data = load_node_dataset("tolokers", tmp_path, fold=4)
    assert data.num_nodes == 30 and data.num_features == 5
    assert torch.equal(data.train_mask, torch.from_numpy(masks[0, 4]))
    assert torch.equal(data.test_mask, torch.from_numpy(masks[2, 4]))
    with pytest.raises(UserError, match="fold must be in"):
        load_node_dataset("tolokers", tmp_path, fold=10)


def test_missing_raw_files_give_a_clear_error_without_download(tmp_path):
    with pytest.raises(UserError, match=r"raw files not found: expected .*electronics_photo"):
        load_node_dataset("AmazonPhoto", tmp_path)
    with pytest.raises(UserError, match="unknown dataset"):
        load_node_dataset("Cora2", tmp_path)


def test_presets_follow_table_s6():
    p = PRESETS["NCI1"].model
    assert (p["num_steps"], p["hidden"], p["state"], p["num_pseudo"], p["dropout"]) == (
        6, 128, 128, 32, 0.1,
    )  # fmt: skip
    p = PRESETS["minesweeper"].model
    assert (p["num_steps"], p["hidden"], p["num_pseudo"], p["dropout"]) == (7, 64, 128, 0.3)
    assert PRESETS["ogbg-molpcba"].model["class_pieces"] == 8
