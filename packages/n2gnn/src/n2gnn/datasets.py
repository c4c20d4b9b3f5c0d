"""The paper's datasets by name from a local root (PyG on-disk formats), presets and splits.

Nothing here downloads: a PyG dataset whose raw files are missing raises a ``UserError`` naming
the files it expected. Presets are paper Tab. S6 (the repository ships no config files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from labcore.cli import UserError
from labcore.data import split_indices


@dataclass(frozen=True)
class Preset:
    """How one dataset is loaded, split, scored and which N² hyper-parameters it uses."""

    loader: str  # planetoid | amazon | coauthor | heterophilous | tu | ogbn | ogbg | karate
    pyg_name: str
    level: str = "node"  # node | graph
    task: str = "multiclass"  # multiclass | binary | multilabel
    metric: str = "accuracy"  # accuracy | rocauc | ap
    split: str = "random602020"  # random602020 | official | tu10fold
    model: dict = field(default_factory=dict)  # N2Config overrides (Tab. S6)
    batch_size: int = 256


def _hp(L, d=128, q=64, np_=256, p=0.1, **kw) -> dict:
    return dict(num_steps=L, hidden=d, state=q, pieces=8, num_pseudo=np_, dropout=p, **kw)


PRESETS: dict[str, Preset] = {
    # node classification, homophilic (Tab. 3)
    "CoauthorCS": Preset("coauthor", "CS", model=_hp(3, p=0.4)),
    "CoauthorPhysics": Preset("coauthor", "Physics", model=_hp(3, p=0.5)),
    "AmazonPhoto": Preset("amazon", "Photo", model=_hp(5, p=0.1)),
    "AmazonComputers": Preset("amazon", "Computers", model=_hp(3, p=0.3)),
    # heterophilic (Tab. 4): official 10 splits; ROC-AUC on the binary sets
    "questions": Preset(
        "heterophilous", "questions", task="binary", metric="rocauc", split="official", model=_hp(6)
    ),
    "amazon-ratings": Preset(
        "heterophilous", "amazon_ratings", split="official", model=_hp(8, d=64, p=0.3)
    ),
    "tolokers": Preset(
        "heterophilous", "tolokers", task="binary", metric="rocauc", split="official", model=_hp(6)
    ),
    "minesweeper": Preset(
        "heterophilous",
        "minesweeper",
        task="binary",
        metric="rocauc",
        split="official",
        model=_hp(7, d=64, np_=128, p=0.3),
    ),
    # large (Tab. 5), OGB official splits
    "ogbn-arxiv": Preset("ogbn", "ogbn-arxiv", split="official", model=_hp(5, np_=320, p=0.3)),
    "ogbn-proteins": Preset(
        "ogbn",
        "ogbn-proteins",
        task="multilabel",
        metric="rocauc",
        split="official",
        model=_hp(3, p=0.3),
    ),
    # graph classification (Tab. 1), TU 10-fold with a validation split for selection
    "PROTEINS": Preset("tu", "PROTEINS", "graph", split="tu10fold", model=_hp(8, np_=32)),
    "NCI1": Preset("tu", "NCI1", "graph", split="tu10fold", model=_hp(6, q=128, np_=32)),
    "COLLAB": Preset("tu", "COLLAB", "graph", split="tu10fold", model=_hp(6, np_=32)),
    "IMDB-BINARY": Preset("tu", "IMDB-BINARY", "graph", split="tu10fold", model=_hp(6, np_=32)),
    "IMDB-MULTI": Preset("tu", "IMDB-MULTI", "graph", split="tu10fold", model=_hp(6, np_=8, p=0.2)),
    "ogbg-molpcba": Preset(
        "ogbg",
        "ogbg-molpcba",
        "graph",
        "multilabel",
        "ap",
        "official",
        model=_hp(6, np_=32, p=0.3, class_pieces=8),
        batch_size=1024,
    ),
    # not in the paper: no preset hyper-parameters (official CLI defaults)
    "Cora": Preset("planetoid", "Cora"),
    "CiteSeer": Preset("planetoid", "CiteSeer"),
    "PubMed": Preset("planetoid", "PubMed"),
    "KarateClub": Preset("karate", "KarateClub"),
}
DEGREE_FEATURES = {"COLLAB", "IMDB-BINARY", "IMDB-MULTI"}  # one-hot degree, as the code


def _offline(cls):
    """``cls`` with ``download`` replaced by a clear error naming the expected raw files."""

    def download(self):
        raise UserError(
            f"{cls.__name__} raw files not found: expected {', '.join(self.raw_paths)} "
            "(n2gnn never downloads; place the dataset there in PyG's layout)"
        )

    return type(cls.__name__, (cls,), {"download": download, "process": cls.process})


def _masks(n: int, seed: int) -> dict[str, torch.Tensor]:
    out = {}
    for name, idx in zip(("train", "val", "test"), split_indices(n, [0.6, 0.2, 0.2], seed)):
        m = torch.zeros(n, dtype=torch.bool)
        m[torch.from_numpy(idx)] = True
        out[f"{name}_mask"] = m
    return out


def load_node_dataset(name: str, root: str | Path, *, seed: int = 42, fold: int = 1) -> Data:
    """One graph with ``train/val/test_mask`` (random 60/20/20 by ``seed``, or split ``fold`` of
    the official ones)."""
    import torch_geometric.datasets as D

    p = preset(name)
    if p.level != "node":
        raise UserError(f"{name} is a graph-level dataset")
    root = str(root)
    if p.loader == "karate":
        data = D.KarateClub()[0]
        return Data(x=data.x, edge_index=data.edge_index, y=data.y, **_masks(data.num_nodes, seed))
    if p.loader == "ogbn":
        return _load_ogbn(p.pyg_name, root)
    cls = {
        "planetoid": D.Planetoid,
        "amazon": D.Amazon,
        "coauthor": D.Coauthor,
        "heterophilous": D.HeterophilousGraphDataset,
    }[p.loader]
    data = _offline(cls)(root, p.pyg_name)[0]
    if p.split == "official":
        if not 0 <= fold < data.train_mask.size(1):
            raise UserError(f"fold must be in [0, {data.train_mask.size(1) - 1}], got {fold}")
        return Data(
            x=data.x,
            edge_index=data.edge_index,
            y=data.y,
            train_mask=data.train_mask[:, fold],
            val_mask=data.val_mask[:, fold],
            test_mask=data.test_mask[:, fold],
        )
    return Data(x=data.x, edge_index=data.edge_index, y=data.y, **_masks(data.num_nodes, seed))


def load_graph_dataset(name: str, root: str | Path):
    """A PyG ``InMemoryDataset`` of graphs (one-hot degree features where the code uses them)."""
    import torch_geometric.datasets as D
    from torch_geometric.transforms import OneHotDegree
    from torch_geometric.utils import degree

    p = preset(name)
    if p.level != "graph":
        raise UserError(f"{name} is a node-level dataset")
    if p.loader == "ogbg":
        return _load_ogbg(p.pyg_name, str(root))
    ds = _offline(D.TUDataset)(str(root), p.pyg_name)
    if name in DEGREE_FEATURES or ds.num_features == 0:
        max_deg = max(int(degree(g.edge_index[0], g.num_nodes).max(initial=0)) for g in ds)
        ds.transform = OneHotDegree(max_deg)
    return ds


def tu_fold(labels, fold: int, num_folds: int = 10, seed: int = 42, val_fraction: float = 0.1):
    """Train / val / test indices for fold ``fold`` of stratified ``num_folds``-fold CV.

    The test part is the fold; a stratified ``val_fraction`` of the rest is held out for model
    selection (the official code instead selects and reports on the full dataset).
    """
    from sklearn.model_selection import StratifiedKFold, train_test_split

    y = np.asarray(labels)
    if not 0 <= fold < num_folds:
        raise UserError(f"fold must be in [0, {num_folds - 1}], got {fold}")
    skf = StratifiedKFold(num_folds, shuffle=True, random_state=seed)
    rest, test = list(skf.split(np.zeros(len(y)), y))[fold]
    train, val = train_test_split(rest, test_size=val_fraction, stratify=y[rest], random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


def _require_ogb():
    try:
        import ogb  # noqa: F401
    except ImportError:
        raise UserError("OGB datasets need the `ogb` package: pip install ogb") from None


def _load_ogbn(name: str, root: str) -> Data:
    _require_ogb()
    from ogb.nodeproppred import PygNodePropPredDataset

    ds = PygNodePropPredDataset(name, root)
    data, split = ds[0], ds.get_idx_split()
    n = data.num_nodes
    masks = {}
    for key, part in (("train", "train"), ("val", "valid"), ("test", "test")):
        m = torch.zeros(n, dtype=torch.bool)
        m[split[part]] = True
        masks[f"{key}_mask"] = m
    y = data.y.squeeze(-1) if data.y.size(-1) == 1 else data.y
    x = data.x if data.x is not None else torch.zeros(n, 1)  # ogbn-proteins: edge features only
    return Data(x=x, edge_index=data.edge_index, edge_attr=data.edge_attr, y=y, **masks)


def _load_ogbg(name: str, root: str):
    _require_ogb()
    from ogb.graphproppred import PygGraphPropPredDataset

    return PygGraphPropPredDataset(name, root)


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
