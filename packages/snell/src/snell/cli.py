"""``snell`` command line: demo / train / evaluate / bench (a thin layer over the Python API)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from labcore.cli import (
    UserError,
    common_parser,
    error_boundary,
    nonnegative_int,
    parse_args,
    positive_float,
    positive_int,
    unit_interval,
)
from snell import __version__

if TYPE_CHECKING:
    import torch

PACKAGE = "snell"


def _sparsity(text: str) -> float:
    value = unit_interval(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _dropout(text: str) -> float:
    return _sparsity(text)


def _json_mapping(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _add_snell_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SNELL adapter")
    # not "--r": torchrun's own parser would take it for an abbreviation of its --rdzv-* flags
    g.add_argument("--adapter-rank", dest="r", type=positive_int, default=8,
                   help="rank r of the adapter (a multiple of the 2 kernel pieces)")  # fmt: skip
    g.add_argument("--sparsity", type=_sparsity, default=0.9,
                   help="fraction s of each ΔW zeroed, in [0, 1); 0 = KLoRA")  # fmt: skip
    g.add_argument("--kernel", default="piecewise_linear",
                   choices=["piecewise_linear", "linear", "rbf", "sigmoid"],
                   help="kernel of the merge (piecewise_linear: SNELL's)")  # fmt: skip
    g.add_argument("--gate", default="official", choices=["official", "paper_soft"],
                   help="official code's gate or paper Eq. 5's soft threshold")  # fmt: skip
    g.add_argument("--no-recompute", action="store_true",
                   help="store ΔW for backward instead of recomputing it")  # fmt: skip
    g.add_argument("--adapter-dropout", type=_dropout, default=0.1,
                   help="dropout on the adapters' input (official 0.1)")  # fmt: skip
    g.add_argument("--adapter-drop-path", type=_dropout, default=0.1,
                   help="DropPath on the adapters' output (official 0.1)")  # fmt: skip


def _add_model_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vit_base_patch16_224", help="timm model name")
    p.add_argument("--model-kwargs", type=_json_mapping, default={},
                   help="JSON object of keyword arguments for timm.create_model, "
                        "e.g. '{\"depth\": 2}'")  # fmt: skip
    p.add_argument(
        "--weights",
        default=None,
        help="pretrained weights: a local file (.pth/.npz/.safetensors) or a hub id "
        "('hf-hub:org/name'); omitted = random init",
    )
    p.add_argument(
        "--data", type=Path, required=True, help="dataset folder: VTAB-1k list files or ImageFolder"
    )
    p.add_argument("--layout", default="auto", choices=["auto", "vtab", "imagefolder"],
                   help="dataset layout (auto: detect)")  # fmt: skip
    p.add_argument("--img-size", type=positive_int, default=224,
                   help="images are resized to this square size")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="global batch size (per process: this / number of processes)")  # fmt: skip
    p.add_argument("--workers", type=nonnegative_int, default=0, help="DataLoader workers")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="decode every image first and skip unreadable ones with a counted "
                        "warning (default: stop at the first, naming it)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    common = common_parser(PACKAGE)
    parser = argparse.ArgumentParser(
        prog=PACKAGE,
        description="SNELL: sparse tuning with "
        "kernelized LoRA (NeurIPS 2024), peft-shaped, for timm.",
    )
    parser.add_argument("--version", action="version", version=f"snell {__version__}",
                        help="print the version and exit")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", parents=[common], help="digits pretrain -> transfer experiment")
    d.add_argument("--seeds", type=positive_int, default=3, help="seeds per method")
    d.add_argument("--epochs", type=positive_int, default=None,
                   help="transfer epochs (None: the arch's, small 200, spec 50)")  # fmt: skip
    d.add_argument("--batch-size", type=positive_int, default=None,
                   help="transfer batch (None: the arch's, small 16, spec 32)")  # fmt: skip
    d.add_argument("--pretrain-epochs", type=positive_int, default=None,
                   help="stand-in pretraining epochs (None: the arch's protocol, 30)")  # fmt: skip
    d.add_argument("--arch", default="small", choices=["small", "spec"],
                   help="stand-in ViT: 'small' (the right-sized default) or 'spec' "
                        "(patch 4, dim 192, depth 6: slow on CPU)")  # fmt: skip
    d.add_argument("--methods", nargs="+", default=None, help="subset of methods to run")

    t = sub.add_parser("train", parents=[common], help="train SNELL on a real dataset")
    _add_model_data(t)
    _add_snell_options(t)
    t.add_argument("--epochs", type=positive_int, default=100, help="training epochs")
    t.add_argument("--lr", type=positive_float, default=1e-3, help="AdamW learning rate")
    t.add_argument("--weight-decay", type=_nonnegative_float, default=1e-2,
                   help="AdamW weight decay on >= 2-D tensors")  # fmt: skip
    t.add_argument("--warmup-epochs", type=nonnegative_int, default=10,
                   help="linear warmup epochs of the cosine schedule")  # fmt: skip
    t.add_argument("--drop-path", type=_dropout, default=0.1, help="backbone stochastic depth")
    t.add_argument("--eval-split", default="test", help="split evaluated at the end ('' = none)")

    e = sub.add_parser("evaluate", parents=[common], help="top-1 of a saved adapter")
    _add_model_data(e)
    e.add_argument("--adapter", type=Path, required=True, help="folder from save_pretrained")
    e.add_argument("--split", default="test", help="split to evaluate")

    b = sub.add_parser("bench", parents=[common], help="ViT-B/16 memory benchmark")
    b.add_argument("--quick", action="store_true",
                   help="the same claims at a smaller scale (<= 90 s on 2 cores)")  # fmt: skip
    b.add_argument("--no-peak", action="store_true", help="skip the peak-memory measurements")
    b.add_argument("--loop", default="official", choices=["official", "lean"],
                   help="step order: official engine.py (old grads alive in the forward) or "
                        "lean (grads freed before the forward)")  # fmt: skip
    return parser


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected float, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite float >= 0, got {text!r}")
    return value


@error_boundary(PACKAGE)
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    from labcore import dist
    from labcore.runs import seed_everything

    if args.command in ("train", "evaluate"):
        try:
            return {"train": cmd_train, "evaluate": cmd_evaluate}[args.command](args)
        finally:
            dist.shutdown()
    dist.check_precision(args.precision, "cuda")
    device = dist.init(args.device).device  # no process group outside torchrun
    if args.precision != "fp32":
        raise UserError(f"snell {args.command} runs in fp32 (--precision is for train/evaluate)")
    seed_everything(args.seed)
    return {"demo": cmd_demo, "bench": cmd_bench}[args.command](args, device)


# ------------------------------------------------------------------------------ demo
def cmd_demo(args, device: torch.device) -> int:
    from dataclasses import asdict

    from labcore.runs import Claim, Timer, write_result
    from snell.demo import METHODS, DemoSettings, acceptance, format_table, plot_demo, run_demo

    settings = DemoSettings(
        arch=args.arch,
        seeds=args.seeds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        pretrain_epochs=args.pretrain_epochs,
        methods=tuple(args.methods or METHODS),
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
    if "linear_probe" in r and len(r) > 1:
        probe = r["linear_probe"]["test_mean"]
        margin = min(100 * (v["test_mean"] - probe) for m, v in r.items() if m != "linear_probe")
        claims.append(Claim("A1 every adapter method - linear probe, test top-1 (stand-in)",
                            "min_margin_pts", margin, None, "pts", threshold=5.0))  # fmt: skip
    if "snell8" in r and "lora8" in r:
        diff = 100 * (r["snell8"]["test_mean"] - r["lora8"]["test_mean"])
        claims.append(Claim("A2 SNELL-8 - LoRA-8, test top-1 (stand-in)", "diff_pts", diff,
                            None, "pts", threshold=-2.0))  # fmt: skip
    plots = plot_demo(res, args.out)
    path = write_result(
        args.out,
        package=PACKAGE,
        command="demo",
        dataset="sklearn-digits 0-4 -> shifted 5-9",
        metrics={"source_acc": res["source_acc"], "results": r, "acceptance": checks},
        timings={"total_s": timer.elapsed},
        config=asdict(settings),
        device=device,
        seed=args.seed,
        claims=claims,
    )
    print(f"wrote {path} and {', '.join(str(p) for p in plots)} ({timer.elapsed:.0f} s)")
    return 0


# ------------------------------------------------------------------------------ train / evaluate
def _settings(args, **extra):
    from snell.finetune import TrainSettings

    return TrainSettings(
        model=args.model,
        weights=args.weights,
        model_kwargs=args.model_kwargs,
        img_size=args.img_size,
        layout=args.layout,
        batch_size=args.batch_size,
        workers=args.workers,
        precision=args.precision,
        skip_bad_images=args.skip_bad_images,
        **extra,
    )


def cmd_train(args) -> int:
    from labcore import dist
    from labcore.runs import write_result
    from snell.config import SnellConfig
    from snell.finetune import train

    settings = _settings(
        args,
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        drop_path=args.drop_path,
        eval_split=args.eval_split or None,
    )
    cfg = SnellConfig(
        r=args.r,
        sparsity=args.sparsity,
        kernel=args.kernel,
        gate=args.gate,
        recompute=not args.no_recompute,
        adapter_dropout=args.adapter_dropout,
        adapter_drop_path=args.adapter_drop_path,
        base_model_name_or_path=args.weights or args.model,
    )
    res = train(args.data, settings, cfg, out_dir=args.out, device=args.device, seed=args.seed)
    key = f"{args.eval_split}_top1"
    if dist.is_main() and key in res.metrics:
        print(f"{args.eval_split} top-1: {100 * res.metrics[key]:.2f}% "
              f"(gate={cfg.gate}, s={cfg.sparsity}, precision={args.precision})")  # fmt: skip
    path = write_result(
        args.out,
        package=PACKAGE,
        command="train",
        dataset=str(args.data),
        metrics=res.metrics,
        timings=res.timings,
        config={**vars(args), "snell": cfg.to_dict()},
        device=next(res.model.parameters()).device,
        seed=args.seed,
    )
    if dist.is_main():
        print(f"adapter saved to {res.adapter_dir}; wrote {path}")
    return 0


def cmd_evaluate(args) -> int:
    from labcore import dist
    from labcore.runs import write_result
    from snell.finetune import evaluate

    metrics = evaluate(args.data, args.adapter, _settings(args), split=args.split,
                       device=args.device, seed=args.seed)  # fmt: skip
    if dist.is_main():
        print(f"{args.split} top-1: {100 * metrics[f'{args.split}_top1']:.2f}%")
    path = write_result(
        args.out,
        package=PACKAGE,
        command="evaluate",
        dataset=str(args.data),
        metrics=metrics,
        config=vars(args),
        device=dist.init(args.device).device,
        seed=args.seed,
    )
    if dist.is_main():
        print(f"wrote {path}")
    return 0


# ------------------------------------------------------------------------------ bench
def cmd_bench(args, device: torch.device) -> int:
    from dataclasses import asdict

    from labcore.runs import Timer, write_result
    from snell.bench import FULL, QUICK, plot_peaks, run_bench

    scale = QUICK if args.quick else FULL
    with Timer(device) as timer:
        res = run_bench(scale, device, peak=not args.no_peak, loop=args.loop,
                        log=lambda line: print(line, flush=True))  # fmt: skip
    for c in res["claims"]:
        verdict = "met" if c.met else "MISSED"
        print(f"{c.claim}: {c.value:.4g} vs {'<=' if not c.higher_is_better else '>='} "
              f"{c.threshold:.4g} {c.unit} -> {verdict}")  # fmt: skip
    peak_kind = (
        "cuda max_memory_allocated"
        if device.type == "cuda"
        else "CPU live tensor bytes (labcore TensorMemoryTracker)"
        + ("; peak RSS beside it" if scale.rss else "")
    )
    rows = res["rows"]
    plot = None
    if not args.no_peak:
        plot = plot_peaks(rows, scale.batch_sizes, args.out / "snell_bench_peak_memory.png", scale)
    path = write_result(
        args.out,
        package=PACKAGE,
        command="bench",
        dataset=f"random {scale.img_size}² inputs, ViT patch 16, {scale.depth} blocks of width "
        f"{scale.width}, random init, {scale.num_classes} classes",
        metrics={
            "rows": rows,
            "qkv_layer": res["qkv"],
            "checks": res["checks"],
            "peak_kind": peak_kind,
        },
        memory={k: v.get(f"peak_bytes_b{scale.batch_sizes[0]}") for k, v in rows.items()},
        timings={"total_s": timer.elapsed},
        config={"scale": asdict(scale), "quick": args.quick, "loop": args.loop},
        device=device,
        seed=args.seed,
        claims=res["claims"],
    )
    print(f"wrote {path}" + (f" and {plot}" if plot else "") + f" ({timer.elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
