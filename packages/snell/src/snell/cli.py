"""``snell`` command line: demo / train / evaluate / bench (a thin layer over the Python API)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from labcore.cli import UserError, common_parser, error_boundary, parse_args
from snell import __version__

PACKAGE = "snell"


def _add_snell_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SNELL adapter")
    g.add_argument("--r", type=int, default=8, help="rank r (default 8)")
    g.add_argument("--sparsity", type=float, default=0.9, help="fraction s of ΔW zeroed")
    g.add_argument(
        "--kernel",
        default="piecewise_linear",
        choices=["piecewise_linear", "linear", "rbf", "sigmoid"],
    )
    g.add_argument("--gate", default="official", choices=["official", "paper_soft"])
    g.add_argument("--no-recompute", action="store_true", help="store ΔW for backward")


def _add_model_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vit_base_patch16_224", help="timm model name")
    p.add_argument(
        "--model-kwargs",
        type=json.loads,
        default={},
        help="JSON keyword arguments for timm.create_model, e.g. '{\"depth\": 2}'",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="pretrained weights: a local file (.pth/.npz/.safetensors) or a hub id "
        "('hf-hub:org/name'); omitted = random init",
    )
    p.add_argument(
        "--data", type=Path, required=True, help="dataset folder: VTAB-1k list files or ImageFolder"
    )
    p.add_argument("--layout", default="auto", choices=["auto", "vtab", "imagefolder"])
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    common = common_parser(PACKAGE)
    parser = argparse.ArgumentParser(
        prog=PACKAGE,
        description="SNELL: sparse tuning with "
        "kernelized LoRA (NeurIPS 2024), peft-shaped, for timm.",
    )
    parser.add_argument("--version", action="version", version=f"snell {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", parents=[common], help="digits pretrain -> transfer experiment")
    d.add_argument("--seeds", type=int, default=1, help="seeds (spec protocol: 3)")
    d.add_argument("--epochs", type=int, default=30, help="transfer epochs (spec: 50)")
    d.add_argument("--pretrain-epochs", type=int, default=30)
    d.add_argument(
        "--arch",
        default="small",
        choices=["small", "spec"],
        help="stand-in ViT: 'spec' = patch 4, dim 192, depth 6 (slow on CPU)",
    )
    d.add_argument("--methods", nargs="+", default=None, help="subset of methods to run")

    t = sub.add_parser("train", parents=[common], help="train SNELL on a real dataset")
    _add_model_data(t)
    _add_snell_options(t)
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=1e-2)
    t.add_argument("--warmup-epochs", type=int, default=10)
    t.add_argument("--drop-path", type=float, default=0.1, help="backbone stochastic depth")
    t.add_argument("--eval-split", default="test", help="split evaluated at the end ('' = none)")

    e = sub.add_parser("evaluate", parents=[common], help="top-1 of a saved adapter")
    _add_model_data(e)
    e.add_argument("--adapter", type=Path, required=True, help="folder from save_pretrained")
    e.add_argument("--split", default="test")

    b = sub.add_parser("bench", parents=[common], help="ViT-B/16 memory benchmark")
    b.add_argument("--quick", action="store_true", help="batch 2 only")
    b.add_argument("--no-peak", action="store_true", help="skip the peak-memory measurements")
    b.add_argument("--loop", default="official", choices=["official", "lean"],
                   help="step order: official engine.py (old grads alive in the forward) or "
                        "lean (grads freed before the forward)")  # fmt: skip
    return parser


@error_boundary(PACKAGE)
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    from labcore.runs import resolve_device, seed_everything

    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise UserError(str(e)) from None
    seed_everything(args.seed)
    return {"demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate, "bench": cmd_bench}[
        args.command
    ](args, device)


# ------------------------------------------------------------------------------ demo
def cmd_demo(args, device: torch.device) -> int:
    from labcore.runs import Claim, Timer, write_result
    from snell.demo import METHODS, DemoSettings, acceptance, format_table, run_demo

    if args.seeds < 1 or args.epochs < 1 or args.pretrain_epochs < 1:
        raise UserError("--seeds, --epochs and --pretrain-epochs must be positive")
    methods = tuple(args.methods or METHODS)
    bad = set(methods) - set(METHODS)
    if bad:
        raise UserError(f"unknown methods {sorted(bad)}; choose from {', '.join(METHODS)}")
    settings = DemoSettings(
        arch=args.arch,
        seeds=args.seeds,
        epochs=args.epochs,
        pretrain_epochs=args.pretrain_epochs,
        methods=methods,
    )
    with Timer(device) as timer:
        res = run_demo(settings, args.out, device, seed=args.seed)
    checks = acceptance(res)
    print(f"stand-in source accuracy (digits 0-4): {100 * res['source_acc']:.1f}%")
    print(format_table(res))
    for k, v in checks.items():
        print(f"{k}: {'met' if v else 'MISSED'}")
    r = res["results"]
    claims = []
    if "snell8" in r and "lora8" in r:
        claims.append(
            Claim(
                "SNELL-8 >= LoRA-8 - 2 pts on digits transfer (stand-in)",
                "test_top1",
                r["snell8"]["test_mean"],
                r["lora8"]["test_mean"],
            )
        )
    path = write_result(
        args.out,
        package=PACKAGE,
        command="demo",
        dataset="sklearn-digits 0-4 -> shifted 5-9",
        metrics={"source_acc": res["source_acc"], "results": r, "acceptance": checks},
        timings={"total_s": timer.elapsed},
        config=vars(settings),
        device=device,
        seed=args.seed,
        claims=claims,
    )
    print(f"wrote {path}")
    return 0


# ------------------------------------------------------------------------------ train / evaluate
def _create_model(
    name: str,
    weights: str | None,
    num_classes: int,
    img_size: int,
    drop_path: float = 0.0,
    extra: dict | None = None,
):
    import timm

    kwargs = dict(num_classes=num_classes, img_size=img_size, drop_path_rate=drop_path)
    kwargs.update(extra or {})
    if name not in timm.list_models() and not name.startswith("hf-hub:"):
        raise UserError(f"unknown timm model {name!r}")
    if weights is None:
        return timm.create_model(name, pretrained=False, **kwargs)
    if weights.startswith("hf-hub:"):
        return timm.create_model(weights, pretrained=True, **kwargs)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    model = timm.create_model(name, pretrained=False, **kwargs)
    load_backbone_weights(model, path)
    return model


def load_backbone_weights(model, path: Path) -> None:
    """Load a local checkpoint (.npz of Google's ViTs, or .pth / .safetensors state dict) into
    ``model``; the classifier is skipped when its shape differs, anything else must match."""
    from timm.models import load_state_dict

    if path.suffix == ".npz":
        if not hasattr(model, "load_pretrained"):
            raise UserError(f"{path}: .npz weights need a timm VisionTransformer")
        model.load_pretrained(str(path))
        return
    try:
        state = load_state_dict(str(path), use_ema=False)
    except Exception as e:  # any unreadable file is a user error here
        raise UserError(f"cannot read weights {path}: {e}") from None
    own = model.state_dict()
    head = {
        k for k in state if k.startswith("head.") and k in own and own[k].shape != state[k].shape
    }
    state = {k: v for k, v in state.items() if k not in head}
    bad = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in state.items() if k not in bad}, strict=False
    )
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected or bad:
        raise UserError(
            f"{path} does not fit {type(model).__name__}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(bad)} mis-shaped tensors "
            f"(e.g. {(missing + unexpected + bad)[0]})"
        )


def _loader(dataset, batch_size: int, shuffle: bool, workers: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=g
    )


def _num_classes(dataset) -> int:
    return len(dataset.classes) if hasattr(dataset, "classes") else int(max(dataset.targets)) + 1


def cmd_train(args, device: torch.device) -> int:
    from labcore.cli import progress
    from labcore.runs import Timer, write_result
    from snell.config import SnellConfig
    from snell.data import load_split
    from snell.model import get_snell_model
    from snell.training import cosine_schedule, evaluate_top1, make_optimizer, train_epoch

    if args.epochs < 1:
        raise UserError("--epochs must be positive")
    try:
        cfg = SnellConfig(
            r=args.r,
            sparsity=args.sparsity,
            kernel=args.kernel,
            gate=args.gate,
            recompute=not args.no_recompute,
            base_model_name_or_path=args.weights or args.model,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    train_set = load_split(args.data, "train", args.img_size, args.layout)
    num_classes = max(_num_classes(train_set), int(max(train_set.targets)) + 1)
    model = _create_model(
        args.model, args.weights, num_classes, args.img_size, args.drop_path, args.model_kwargs
    )
    model = get_snell_model(model, cfg).to(device)
    model.print_trainable_parameters()
    opt = make_optimizer(model, args.lr, args.weight_decay)
    sched = cosine_schedule(opt, args.epochs, args.warmup_epochs)
    losses = []
    with Timer(device) as timer:
        for epoch in progress(range(args.epochs), desc="epochs"):
            sched.step(epoch)
            loader = _loader(train_set, args.batch_size, True, args.workers, args.seed + epoch)
            losses.append(train_epoch(model, loader, opt, device))
    adapter_dir = model.save_pretrained(args.out / "adapter")
    metrics = {"train_loss": losses, "final_train_loss": losses[-1]}
    if args.eval_split:
        test_set = load_split(args.data, args.eval_split, args.img_size, args.layout)
        loader = _loader(test_set, args.batch_size, False, args.workers)
        metrics[f"{args.eval_split}_top1"] = evaluate_top1(model, loader, device)
        print(
            f"{args.eval_split} top-1: {100 * metrics[f'{args.eval_split}_top1']:.2f}% "
            f"(gate={cfg.gate}, s={cfg.sparsity})"
        )
    path = write_result(
        args.out,
        package=PACKAGE,
        command="train",
        dataset=str(args.data),
        metrics=metrics,
        timings={"train_s": timer.elapsed},
        config={**vars(args), "snell": cfg.to_dict()},
        device=device,
        seed=args.seed,
    )
    print(f"adapter saved to {adapter_dir}; wrote {path}")
    return 0


def cmd_evaluate(args, device: torch.device) -> int:
    from labcore.runs import write_result
    from snell.config import SnellConfig
    from snell.data import load_split
    from snell.model import from_pretrained
    from snell.training import evaluate_top1

    cfg = SnellConfig.from_pretrained(args.adapter)
    dataset = load_split(args.data, args.split, args.img_size, args.layout)
    model = _create_model(
        args.model, args.weights, _num_classes(dataset), args.img_size, extra=args.model_kwargs
    )
    try:
        model = from_pretrained(model, args.adapter).to(device)
    except ValueError as e:
        raise UserError(f"{args.adapter}: {e}") from None
    top1 = evaluate_top1(model, _loader(dataset, args.batch_size, False, args.workers), device)
    print(f"{args.split} top-1: {100 * top1:.2f}% (gate={cfg.gate}, s={cfg.sparsity})")
    path = write_result(
        args.out,
        package=PACKAGE,
        command="evaluate",
        dataset=str(args.data),
        metrics={f"{args.split}_top1": top1},
        config=vars(args),
        device=device,
        seed=args.seed,
    )
    print(f"wrote {path}")
    return 0


# ------------------------------------------------------------------------------ bench
def cmd_bench(args, device: torch.device) -> int:
    from labcore.cli import progress
    from labcore.runs import Timer, write_result
    from snell.bench import CONFIGS, MB, measure, memory_checks

    batches = [2] if args.quick else [8, 2]
    rows = {}
    with Timer(device) as timer:
        for name in progress(CONFIGS, desc="configs"):
            rows[name] = measure(name, batches, device, peak=not args.no_peak, loop=args.loop)
            print(
                f"{name}: "
                + ", ".join(f"{k}={v / MB:.1f}MB" for k, v in rows[name].items() if "bytes" in k),
                flush=True,
            )
    checks, claims = memory_checks(rows, batches)
    for c in checks:
        print(
            f"{c['id']} {c['what']}: {c['value']:.3f} vs {c['threshold']:.3f} -> "
            f"{'met' if c['met'] else 'MISSED'}"
        )
    peak_kind = (
        "cuda max_memory_allocated"
        if device.type == "cuda"
        else "CPU live tensor bytes (labcore TensorMemoryTracker); peak RSS beside it"
    )
    path = write_result(
        args.out,
        package=PACKAGE,
        command="bench",
        dataset="random 224x224 inputs, ViT-B/16 random init, 100 classes",
        metrics={"rows": rows, "checks": checks, "peak_kind": peak_kind},
        memory={k: v.get(f"peak_bytes_b{batches[0]}") for k, v in rows.items()},
        timings={"total_s": timer.elapsed},
        config={"batch_sizes": batches, "quick": args.quick, "loop": args.loop},
        device=device,
        seed=args.seed,
        claims=claims,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
