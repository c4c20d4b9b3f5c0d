"""``n2gnn`` command line: demo, train, evaluate, bench."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from labcore.cli import UserError, common_parser, error_boundary, parse_args
from labcore.runs import resolve_device, seed_everything, write_result

PROG = "n2gnn"
MODEL_FLAGS = ("num_steps", "hidden", "state", "pieces", "num_pseudo", "dropout")


def build_parser() -> argparse.ArgumentParser:
    common = common_parser(PROG)
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="N²: dynamic message passing on graphs through learnable, moving pseudo nodes.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", parents=[common], help="offline SBM + graph-task comparison")
    demo.add_argument(
        "--full",
        action="store_true",
        help="the spec's protocol: 3 seeds × 300 epochs, 2 graph seeds",
    )
    demo.add_argument("--seeds", type=int, default=None)
    demo.add_argument("--node-epochs", type=int, default=None)
    demo.add_argument("--graph-epochs", type=int, default=None)

    bench = sub.add_parser("bench", parents=[common], help="scaling and parameter benchmarks")
    bench.add_argument("--quick", action="store_true", help="CI sizes (still runs 131,072 nodes)")
    bench.add_argument("--repeats", type=int, default=None, help="timed repeats (median)")
    bench.add_argument("--no-memory", action="store_true", help="skip peak-RSS subprocesses")

    train = sub.add_parser("train", parents=[common], help="train on a local PyG dataset")
    train.add_argument("--dataset", required=True)
    train.add_argument("--root", type=Path, default=None, help="dataset root (default: data root)")
    train.add_argument("--epochs", type=int, default=1000)
    train.add_argument("--patience", type=int, default=300)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=1e-6)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument(
        "--fold",
        type=int,
        default=None,
        help="official split index (default 1) or TU fold (default 0)",
    )
    train.add_argument(
        "--num-parts", type=int, default=1, help="random node partitions per epoch for large graphs"
    )
    for flag in MODEL_FLAGS:
        train.add_argument(
            f"--{flag.replace('_', '-')}",
            type=float if flag == "dropout" else int,
            default=None,
            help="override the preset (paper Tab. S6)",
        )

    ev = sub.add_parser("evaluate", parents=[common], help="test metric of a trained checkpoint")
    ev.add_argument("--checkpoint", type=Path, required=True)
    ev.add_argument("--root", type=Path, default=None)
    return parser


@error_boundary(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    seed_everything(args.seed)
    return {"demo": _demo, "bench": _bench, "train": _train, "evaluate": _evaluate}[args.command](
        args
    )


def _demo(args) -> int:
    from dataclasses import replace

    from n2gnn.demo import FULL, DemoConfig, check_thresholds, format_tables, graph_task, node_task

    cfg = FULL if args.full else DemoConfig()
    over = {"seeds": args.seeds, "node_epochs": args.node_epochs, "graph_epochs": args.graph_epochs}
    cfg = replace(
        cfg,
        device=str(resolve_device(args.device)),
        **{k: v for k, v in over.items() if v is not None},
    )
    node = node_task(cfg, args.seed)
    graph = graph_task(cfg, args.seed)
    checks = check_thresholds(node, graph)
    print(format_tables(node, graph, checks))
    path = write_result(
        args.out,
        package=PROG,
        command="demo",
        dataset="synthetic: SBM heterophily (4×750 nodes) + majority-colour ER graphs",
        metrics={"node": node, "graph": graph, "checks": checks},
        config=cfg.__dict__,
        device=cfg.device,
        seed=args.seed,
    )
    print(f"wrote {path}")
    return 0


def _bench(args) -> int:
    from n2gnn.bench import claims, format_table, parameters, scaling

    repeats = args.repeats or (3 if args.quick else 5)
    sc = scaling(quick=args.quick, repeats=repeats, memory=not args.no_memory)
    params = parameters()
    if args.no_memory:
        cl, checks = [], {}
    else:
        cl, checks = claims(sc, params)
    print(format_table(sc, params, checks))
    path = write_result(
        args.out,
        package=PROG,
        command="bench",
        dataset="synthetic random graphs (avg degree 10, 32 features)",
        metrics={"scaling": sc, "parameters": params, "checks": checks},
        config={"quick": args.quick, "repeats": repeats},
        device="cpu",
        seed=args.seed,
        claims=cl,
        timings={"n2_seconds": {n: r["seconds"] for n, r in sc["n2"].items()}},
        memory={"n2_peak_bytes": {n: r.get("peak_bytes") for n, r in sc["n2"].items()}},
    )
    print(f"wrote {path}")
    return 0


def _model_config(args, p, in_channels: int, out_channels: int, edge_dim=None):
    from n2gnn.model import N2Config

    hp = dict(p.model)
    hp.update({f: getattr(args, f) for f in MODEL_FLAGS if getattr(args, f, None) is not None})
    return N2Config(in_channels=in_channels, out_channels=out_channels, edge_dim=edge_dim, **hp)


def _root(root: Path | None) -> Path:
    from labcore.data import data_root

    root = root or data_root()
    if not root.is_dir():
        raise UserError(f"dataset root is not a directory: {root}")
    return root


def _graph_splits(ds, p, fold: int, seed: int):
    if p.split == "tu10fold":
        from n2gnn.datasets import tu_fold

        return tu_fold(ds.y.numpy(), fold, seed=seed)
    split = ds.get_idx_split()
    return split["train"], split["valid"], split["test"]


def _train(args) -> int:
    import torch

    from n2gnn.datasets import load_graph_dataset, load_node_dataset, preset
    from n2gnn.model import N2Graph, N2Node
    from n2gnn.train import fit_graph, fit_node

    p = preset(args.dataset)
    for flag in ("epochs", "patience", "num_parts"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1")
    root = _root(args.root)
    device = resolve_device(args.device)
    fold = args.fold if args.fold is not None else (1 if p.split == "official" else 0)
    if p.level == "node":
        data = load_node_dataset(args.dataset, root, seed=args.seed, fold=fold)
        out_ch = int(data.y.max()) + 1 if p.task != "multilabel" else data.y.size(-1)
        edge_dim = data.edge_attr.size(-1) if data.edge_attr is not None else None
        cfg = _model_config(args, p, data.num_features, out_ch, edge_dim)
        model = N2Node(cfg).to(device)
        res = fit_node(
            model,
            data,
            task=p.task,
            metric=p.metric,
            epochs=args.epochs,
            lr=args.lr,
            weight_decay=args.weight_decay,
            patience=args.patience,
            num_parts=args.num_parts,
            seed=args.seed,
        )
    else:
        from torch_geometric.loader import DataLoader

        ds = load_graph_dataset(args.dataset, root)
        tr, va, te = _graph_splits(ds, p, fold, args.seed)
        out_ch = ds.num_tasks if p.task == "multilabel" else ds.num_classes
        edge_dim = ds[0].edge_attr.size(-1) if ds[0].edge_attr is not None else None
        cfg = _model_config(args, p, ds.num_features, out_ch, edge_dim)
        model = N2Graph(cfg).to(device)
        bs = args.batch_size or p.batch_size
        loaders = (
            DataLoader(ds[torch.as_tensor(tr)], bs, shuffle=True),
            DataLoader(ds[torch.as_tensor(va)], bs),
            DataLoader(ds[torch.as_tensor(te)], bs),
        )
        res = fit_graph(
            model,
            *loaders,
            task=p.task,
            metric=p.metric,
            epochs=args.epochs,
            lr=args.lr,
            weight_decay=args.weight_decay,
            patience=args.patience,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = args.out / f"n2gnn_{args.dataset}.pt"
    torch.save(
        {
            "dataset": args.dataset,
            "level": p.level,
            "config": cfg.as_dict(),
            "state_dict": model.state_dict(),
            "seed": args.seed,
            "fold": fold,
            "num_parts": args.num_parts,
        },
        ckpt,
    )
    print(
        f"{args.dataset}: best epoch {res.best_epoch}, val {p.metric} {res.val_metric:.4f}, "
        f"test {p.metric} {res.test_metric:.4f} ({res.seconds:.0f} s); checkpoint {ckpt}"
    )
    write_result(
        args.out,
        package=PROG,
        command="train",
        dataset=args.dataset,
        metrics=res.as_dict(),
        config={**cfg.as_dict(), "fold": fold},
        device=device,
        seed=args.seed,
        timings={"train_seconds": res.seconds},
    )
    return 0


def _evaluate(args) -> int:
    import torch

    from n2gnn.datasets import load_graph_dataset, load_node_dataset, preset
    from n2gnn.model import N2Config, N2Graph, N2Node
    from n2gnn.train import evaluate_graph, evaluate_node

    if not args.checkpoint.is_file():
        raise FileNotFoundError(2, "No such file", str(args.checkpoint))
    try:
        ck = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        name, cfg = ck["dataset"], N2Config.from_dict(ck["config"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise UserError(f"not an n2gnn checkpoint: {args.checkpoint} ({e})") from None
    p = preset(name)
    root = _root(args.root)
    device = resolve_device(args.device)
    model = (N2Node if p.level == "node" else N2Graph)(cfg)
    model.load_state_dict(ck["state_dict"])
    model.to(device)
    if p.level == "node":
        data = load_node_dataset(name, root, seed=ck["seed"], fold=ck["fold"])
        loss, metric = evaluate_node(
            model,
            data,
            data.test_mask,
            task=p.task,
            metric=p.metric,
            num_parts=ck.get("num_parts", 1),
        )
    else:
        from torch_geometric.loader import DataLoader

        ds = load_graph_dataset(name, root)
        _, _, te = _graph_splits(ds, p, ck["fold"], ck["seed"])
        loader = DataLoader(ds[torch.as_tensor(te)], p.batch_size)
        loss, metric = evaluate_graph(model, loader, task=p.task, metric=p.metric)
    print(f"{name}: test loss {loss:.4f}, test {p.metric} {metric:.4f}")
    write_result(
        args.out,
        package=PROG,
        command="evaluate",
        dataset=name,
        metrics={"test_loss": loss, f"test_{p.metric}": metric},
        config={"checkpoint": str(args.checkpoint), **ck["config"]},
        device=device,
        seed=ck["seed"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
