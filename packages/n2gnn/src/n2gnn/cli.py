"""``n2gnn`` command line: demo, train, evaluate, bench."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from labcore.cli import (
    UserError,
    common_parser,
    error_boundary,
    nonnegative_int,
    parse_args,
    positive_float,
    positive_int,
)
from labcore.runs import resolve_device, seed_everything, write_result


def _float_in(low: float, high: float, what: str):
    """argparse type: a finite float in ``[low, high)``."""

    def parse(text: str) -> float:
        value = _finite(text)
        if not low <= value < high:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected float, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


nonnegative_float = _float_in(0.0, float("inf"), "a number >= 0")
dropout_rate = _float_in(0.0, 1.0, "in [0, 1)")

PROG = "n2gnn"
MODEL_FLAGS = {  # model overrides of the preset: flag -> (type, help)
    "num_steps": (positive_int, "L, applications of the shared cell"),
    "hidden": (positive_int, "d, message width"),
    "state": (positive_int, "q, position/state width"),
    "pieces": (positive_int, "k, pieces per pseudo node"),
    "num_pseudo": (positive_int, "np, number of pseudo nodes"),
    "dropout": (dropout_rate, "dropout inside every NL, in [0, 1)"),
}


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
        help="the spec's N² widths (d=128, q=64, np=128; about 4× the CPU time of the default)",
    )
    demo.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        help="seeds of the SBM node task (default: the protocol's)",
    )
    demo.add_argument(
        "--node-epochs",
        type=positive_int,
        default=None,
        help="epochs per SBM run (default: the protocol's)",
    )
    demo.add_argument(
        "--graph-epochs",
        type=positive_int,
        default=None,
        help="epochs per graph-task run (default: the protocol's)",
    )

    bench = sub.add_parser("bench", parents=[common], help="scaling and parameter benchmarks")
    bench.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes and widths, fewer repeats (≤ 90 s on 2 cores)",
    )
    bench.add_argument(
        "--repeats",
        type=positive_int,
        default=None,
        help="timed repeats per size, median reported (default 3, quick 1)",
    )
    bench.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the peak-memory measurements (no claims then)",
    )

    train = sub.add_parser("train", parents=[common], help="train on a local PyG dataset")
    train.add_argument("--dataset", required=True, help="dataset name (paper presets, Tab. S6)")
    train.add_argument(
        "--root", type=Path, default=None, help="dataset root (default: labcore's data root)"
    )
    train.add_argument("--epochs", type=positive_int, default=1000, help="maximum epochs")
    train.add_argument(
        "--patience",
        type=positive_int,
        default=300,
        help="early-stopping patience in epochs (validation loss)",
    )
    train.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    train.add_argument(
        "--weight-decay", type=nonnegative_float, default=1e-6, help="Adam weight decay"
    )
    train.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="graphs per batch, global over all ranks (default: the preset's)",
    )
    train.add_argument(
        "--fold",
        type=nonnegative_int,
        default=None,
        help="official split index (default 1) or TU fold (default 0)",
    )
    train.add_argument(
        "--num-parts",
        type=positive_int,
        default=1,
        help="random node partitions per epoch for large graphs",
    )
    for flag, (kind, text) in MODEL_FLAGS.items():
        train.add_argument(
            f"--{flag.replace('_', '-')}",
            type=kind,
            default=None,
            help=f"{text} (default: the preset's)",
        )

    ev = sub.add_parser("evaluate", parents=[common], help="test metric of a trained checkpoint")
    ev.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="an n2gnn checkpoint (from train or import-official)",
    )
    ev.add_argument(
        "--root", type=Path, default=None, help="dataset root (default: labcore's data root)"
    )

    imp = sub.add_parser(
        "import-official",
        parents=[common],
        help="convert an official N² checkpoint into an n2gnn checkpoint",
    )
    imp.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="the official file (e.g. 'node as neuron_best.pth') or a state dict",
    )
    imp.add_argument("--dataset", required=True, help="dataset the checkpoint was trained on")
    imp.add_argument(
        "--num-steps",
        type=positive_int,
        required=True,
        help="L, the official --nlayers (not stored in the file)",
    )
    imp.add_argument(
        "--edge-dim",
        type=positive_int,
        default=None,
        help="edge-feature width, for datasets with edge features",
    )
    imp.add_argument(
        "--fold",
        type=nonnegative_int,
        default=None,
        help="split the checkpoint was trained on (default as for train)",
    )
    return parser


def _device(name: str):
    """``resolve_device`` with its error as one line (``--device cuda`` without a GPU)."""
    try:
        return resolve_device(name)
    except (ValueError, RuntimeError) as e:
        raise UserError(str(e)) from None


@error_boundary(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    seed_everything(args.seed)
    commands = {"demo": _demo, "bench": _bench, "train": _train, "evaluate": _evaluate,
                "import-official": _import_official}  # fmt: skip
    return commands[args.command](args)


def _demo(args) -> int:
    from dataclasses import replace

    from n2gnn.demo import (
        FULL,
        DemoConfig,
        check_thresholds,
        format_tables,
        graph_task,
        node_task,
        plot_results,
    )

    cfg = FULL if args.full else DemoConfig()
    over = {"seeds": args.seeds, "node_epochs": args.node_epochs, "graph_epochs": args.graph_epochs}
    cfg = replace(
        cfg,
        device=str(_device(args.device)),
        **{k: v for k, v in over.items() if v is not None},
    )
    node = node_task(cfg, args.seed)
    graph = graph_task(cfg, args.seed)
    checks = check_thresholds(node, graph)
    print(format_tables(node, graph, checks))
    plots = plot_results(node, graph, args.out)
    path = write_result(
        args.out,
        package=PROG,
        command="demo",
        dataset="synthetic: SBM heterophily (4×750 nodes) + majority-colour ER graphs",
        metrics={"node": node, "graph": graph, "checks": checks, "plots": [p.name for p in plots]},
        config={**cfg.__dict__, "node_widths": cfg.node_widths, "graph_widths": cfg.graph_widths},
        device=cfg.device,
        seed=args.seed,
    )
    print(f"wrote {path}" + "".join(f", {p}" for p in plots))
    return 0


def _bench(args) -> int:
    from n2gnn.bench import claims, format_table, parameters, plot_scaling, scaling

    device = _device(args.device)
    sc = scaling(quick=args.quick, repeats=args.repeats, memory=not args.no_memory,
                 device=device, rss=not args.quick, show_progress=True)  # fmt: skip
    params = parameters()
    cl, checks = ([], {}) if args.no_memory else claims(sc, params)
    print(format_table(sc, params, checks))
    plots = plot_scaling(sc, args.out)
    path = write_result(
        args.out,
        package=PROG,
        command="bench",
        dataset="synthetic random graphs (avg degree 10, 32 features)",
        metrics={
            "scaling": sc,
            "parameters": params,
            "checks": checks,
            "plots": [p.name for p in plots],
        },
        config={"quick": args.quick, "repeats": args.repeats, "widths": sc["widths"]},
        device=device,
        seed=args.seed,
        claims=cl,
        timings={k: {n: r["seconds"] for n, r in sc[k].items()} for k in ("n2", "dense")},
        memory={k: {n: r.get("peak_bytes") for n, r in sc[k].items()} for k in ("n2", "dense")},
    )
    print(f"wrote {path}" + "".join(f", {p}" for p in plots))
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

    from labcore import dist
    from n2gnn import _validate as check
    from n2gnn.checkpoint import save_checkpoint
    from n2gnn.datasets import load_graph_dataset, load_node_dataset, preset
    from n2gnn.model import N2Graph, N2Node
    from n2gnn.train import FitConfig, fit_graph, fit_node, graph_loaders, require_single_process

    # values from --config are checked like flags; the Python API checks the same here
    FitConfig(args.epochs, args.lr, args.weight_decay, args.patience, args.num_parts)
    if args.batch_size is not None:
        check.integer("batch_size", args.batch_size)
    if args.fold is not None:
        check.integer("fold", args.fold, minimum=0)
    p = preset(args.dataset)
    root = _root(args.root)
    state = dist.init(args.device)  # torchrun: process group, cuda:LOCAL_RANK; else a no-op
    device = state.device
    dist.check_precision(args.precision, device)
    fold = args.fold if args.fold is not None else (1 if p.split == "official" else 0)
    try:
        if p.level == "node":
            require_single_process(f"{args.dataset}: full-graph node classification")
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
                precision=args.precision,
            )
        else:
            ds = load_graph_dataset(args.dataset, root)
            tr, va, te = _graph_splits(ds, p, fold, args.seed)
            out_ch = ds.num_tasks if p.task == "multilabel" else ds.num_classes
            edge_dim = ds[0].edge_attr.size(-1) if ds[0].edge_attr is not None else None
            cfg = _model_config(args, p, ds.num_features, out_ch, edge_dim)
            model = N2Graph(cfg).to(device)  # same seed on every rank; DDP broadcasts rank 0's
            bs = args.batch_size or p.batch_size
            loaders = graph_loaders(
                ds[torch.as_tensor(tr)],
                ds[torch.as_tensor(va)],
                ds[torch.as_tensor(te)],
                batch_size=bs,
                seed=args.seed,
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
                precision=args.precision,
            )
        if dist.is_main():
            args.out.mkdir(parents=True, exist_ok=True)
            ckpt = save_checkpoint(
                args.out / f"n2gnn_{args.dataset}.pt",
                dataset=args.dataset,
                level=p.level,
                config=cfg.as_dict(),
                state_dict=model.state_dict(),
                seed=args.seed,
                fold=fold,
                num_parts=args.num_parts,
            )
            print(
                f"{args.dataset}: best epoch {res.best_epoch}, val {p.metric} "
                f"{res.val_metric:.4f}, test {p.metric} {res.test_metric:.4f} "
                f"({res.seconds:.0f} s); checkpoint {ckpt}"
            )
        write_result(
            args.out,
            package=PROG,
            command="train",
            dataset=args.dataset,
            metrics={**res.as_dict(), "val_loss_curve": [h["val_loss"] for h in res.history]},
            config={
                **cfg.as_dict(),
                "fold": fold,
                "batch_size": args.batch_size,
                "precision": args.precision,
            },
            device=device,
            seed=args.seed,
            timings={"train_seconds": res.seconds},
        )
        dist.barrier()
    finally:
        dist.shutdown()
    return 0


def _evaluate(args) -> int:
    import torch

    from labcore import dist
    from n2gnn.checkpoint import read_checkpoint
    from n2gnn.datasets import load_graph_dataset, load_node_dataset, preset
    from n2gnn.model import N2Config, N2Graph, N2Node
    from n2gnn.train import evaluate_graph, evaluate_node, require_single_process

    ck = read_checkpoint(args.checkpoint)
    name, cfg = ck["dataset"], N2Config.from_dict(ck["config"])
    p = preset(name)
    root = _root(args.root)
    model = (N2Node if p.level == "node" else N2Graph)(cfg)
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise UserError(f"checkpoint {args.checkpoint} does not fit its config: {msg}") from None
    state = dist.init(args.device)
    device = state.device
    dist.check_precision(args.precision, device)
    model.to(device)
    try:
        if p.level == "node":
            require_single_process(f"{name}: full-graph node evaluation")
            data = load_node_dataset(name, root, seed=ck["seed"], fold=ck["fold"])
            loss, metric = evaluate_node(
                model,
                data,
                data.test_mask,
                task=p.task,
                metric=p.metric,
                num_parts=ck.get("num_parts", 1),
                precision=args.precision,
            )
        else:
            from torch.utils.data import Subset
            from torch_geometric.loader import DataLoader

            ds = load_graph_dataset(name, root)
            _, _, te = _graph_splits(ds, p, ck["fold"], ck["seed"])
            test = ds[torch.as_tensor(te)]
            if dist.world_size() > 1:  # a strided shard per rank, outputs gathered to score
                test = Subset(test, dist.shard(len(test)).tolist())
            loader = DataLoader(test, p.batch_size)
            loss, metric = evaluate_graph(
                model, loader, task=p.task, metric=p.metric, precision=args.precision
            )
        if dist.is_main():
            print(f"{name}: test loss {loss:.4f}, test {p.metric} {metric:.4f}")
        write_result(
            args.out,
            package=PROG,
            command="evaluate",
            dataset=name,
            metrics={"test_loss": loss, f"test_{p.metric}": metric},
            config={
                "checkpoint": str(args.checkpoint),
                "precision": args.precision,
                **ck["config"],
            },
            device=device,
            seed=ck["seed"],
        )
        dist.barrier()
    finally:
        dist.shutdown()
    return 0


def _import_official(args) -> int:
    from n2gnn.checkpoint import save_checkpoint
    from n2gnn.datasets import preset
    from n2gnn.official import load_official

    p = preset(args.dataset)
    model = load_official(args.checkpoint, num_steps=args.num_steps, edge_dim=args.edge_dim)
    level = "graph" if model.__class__.__name__ == "N2Graph" else "node"
    if level != p.level:
        raise UserError(
            f"{args.checkpoint} holds an official N2{level.title()} but {args.dataset} is a "
            f"{p.level}-level dataset"
        )
    fold = args.fold if args.fold is not None else (1 if p.split == "official" else 0)
    args.out.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(
        args.out / f"n2gnn_{args.dataset}.pt",
        dataset=args.dataset,
        level=level,
        config=model.config.as_dict(),
        state_dict=model.state_dict(),
        seed=args.seed,
        fold=fold,
        num_parts=1,
        source=str(args.checkpoint),
    )
    c = model.config
    print(
        f"{args.checkpoint}: official N2{level.title()} (d={c.hidden}, q={c.state}, "
        f"k={c.pieces}, np={c.num_pseudo}, L={c.num_steps}, {c.out_channels} outputs) -> {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
