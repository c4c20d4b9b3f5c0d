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
    """``cls`` that never downloads and reports unreadable files as one ``UserError``.

    A missing raw file names the files expected; an empty, truncated, corrupt or undecodable raw
    file is named with what is wrong with it; an unreadable processed file is named with the
    folder to delete so it is rebuilt from the raw files.
    """

    def download(self):
        raise UserError(
            f"{cls.__name__} raw files not found: expected {', '.join(self.raw_paths)} "
            "(n2gnn never downloads; place the dataset there in PyG's layout)"
        )

    def process(self):
        for raw in _raw_files(self):  # cheap check first: an empty file may "process" fine
            if raw.stat().st_size == 0:
                raise UserError(f"empty file: {raw}")
        try:
            cls.process(self)
        except UserError:
            raise
        except Exception as e:  # whatever the reader raised: find the file to name
            raise UserError(_diagnose_raw(self, e)) from None

    def __init__(self, *args, **kwargs):
        try:
            cls.__init__(self, *args, **kwargs)
        except UserError:
            raise
        except Exception as e:
            raise UserError(_diagnose_processed(self, e)) from None

    return type(
        cls.__name__, (cls,), {"download": download, "process": process, "__init__": __init__}
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _check_text_numbers(path: Path) -> str | None:
    """Why a TU-style text file of comma/space separated numbers cannot be read, or None."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8 text: {path} (byte {e.start})"
    for i, line in enumerate(text.splitlines()):
        try:
            [float(t) for t in line.replace(",", " ").split()]
        except ValueError:
            return f"{path} line {i + 1} is not numbers: {line[:40]!r}"
    return None


def _check_raw_file(path: Path) -> str | None:
    """Why one raw file cannot be read (empty, truncated, corrupt, undecodable), or None."""
    import pickle
    import zipfile

    if path.stat().st_size == 0:
        return f"empty file: {path}"
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                for key in z.files:
                    z[key]
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            return f"cannot read {path}: corrupt or truncated .npz ({_first_line(e)})"
        return None
    if path.suffix == ".txt" or path.name.endswith(".index"):
        return _check_text_numbers(path)
    if path.name.startswith("ind."):  # Planetoid's pickled arrays
        try:
            with path.open("rb") as f:
                pickle.load(f, encoding="latin1")  # as PyG's own reader does
        except Exception as e:
            return f"cannot unpickle {path}: corrupt or truncated ({_first_line(e)})"
    return None


def _raw_files(ds) -> list[Path]:
    """The raw files a dataset names, then any others in its raw folder (TU's optional files)."""
    named = [Path(p) for p in getattr(ds, "raw_paths", [])]
    raw_dir = Path(getattr(ds, "raw_dir", "") or ".")
    others = sorted(raw_dir.iterdir()) if raw_dir.is_dir() else []
    files = named + [p for p in others if p not in named]
    return [p for p in files if p.is_file()]


def _diagnose_raw(ds, error: BaseException) -> str:
    for path in _raw_files(ds):
        why = _check_raw_file(path)
        if why:
            return why
    where = getattr(ds, "raw_dir", "?")
    return f"cannot read the raw files in {where}: {_first_line(error)}"


def _diagnose_processed(ds, error: BaseException) -> str:
    from torch_geometric.io import fs

    for p in getattr(ds, "processed_paths", []):
        path = Path(p)
        if path.is_file():
            try:
                fs.torch_load(str(path))
            except Exception as e:
                return (
                    f"cannot read processed file {path} ({_first_line(e)}); delete "
                    f"{path.parent} to rebuild it from the raw files"
                )
    where = getattr(ds, "root", "?")
    return f"cannot load {type(ds).__name__} from {where}: {_first_line(error)}"


def check_node_data(data: Data, where: str) -> Data:
    """Shapes of a node-level graph: ``UserError`` naming ``where`` when they do not fit."""
    n = data.num_nodes
    if data.x is None or data.x.dim() != 2 or data.x.size(0) != n:
        raise UserError(f"{where}: node features must be (num_nodes, F)")
    if data.y is None or data.y.size(0) != n:
        got = None if data.y is None else tuple(data.y.shape)
        raise UserError(f"{where}: labels must have one row per node ({n}), got {got}")
    ei = data.edge_index
    if ei.dim() != 2 or ei.size(0) != 2:
        raise UserError(f"{where}: edge_index must be (2, E), got {tuple(ei.shape)}")
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise UserError(f"{where}: edges refer to node {int(ei.max())} but there are {n} nodes")
    for name in ("train_mask", "val_mask", "test_mask"):
        m = getattr(data, name)
        if m.dim() != 1 or m.size(0) != n:
            raise UserError(f"{where}: {name} must have one entry per node ({n})")
        if not m.any():
            raise UserError(f"{where}: {name} selects no node")
    return data


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
        return check_node_data(_load_ogbn(p.pyg_name, root), f"{root}/{p.pyg_name}")
    cls = {
        "planetoid": D.Planetoid,
        "amazon": D.Amazon,
        "coauthor": D.Coauthor,
        "heterophilous": D.HeterophilousGraphDataset,
    }[p.loader]
    ds = _offline(cls)(root, p.pyg_name)
    data, where = ds[0], ds.raw_dir
    if p.split == "official":
        masks = data.train_mask
        if masks is None or masks.dim() != 2:
            raise UserError(f"{where}: expected (num_nodes, splits) masks for the official splits")
        if not 0 <= fold < masks.size(1):
            raise UserError(f"fold must be in [0, {masks.size(1) - 1}], got {fold}")
        out = Data(
            x=data.x,
            edge_index=data.edge_index,
            y=data.y,
            train_mask=data.train_mask[:, fold],
            val_mask=data.val_mask[:, fold],
            test_mask=data.test_mask[:, fold],
        )
    else:
        out = Data(x=data.x, edge_index=data.edge_index, y=data.y, **_masks(data.num_nodes, seed))
    return check_node_data(out, where)


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
    where = ds.raw_dir
    try:
        if len(ds) == 0:
            raise UserError(f"{where}: the dataset holds no graphs")
        y = ds._data.y
        if y is None or y.size(0) != len(ds):
            got = 0 if y is None else y.size(0)
            raise UserError(f"{where}: {got} graph labels for {len(ds)} graphs")
        if name in DEGREE_FEATURES or ds.num_features == 0:
            max_deg = max(int(degree(g.edge_index[0], g.num_nodes).max(initial=0)) for g in ds)
            ds.transform = OneHotDegree(max_deg)
        ds[0], ds[len(ds) - 1]
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{where}: inconsistent dataset files ({_first_line(e)})") from None
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
