"""``aucseg`` command line: demo / train / evaluate / bench."""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from aucseg.demo import ARMS
from labcore import dist
from labcore.cli import UserError, common_parser, error_boundary, parse_args
from labcore.runs import Timer, resolve_device, seed_everything, write_result

PROG = "aucseg"


def _number(kind, test, want):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if not (math.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
        return value

    parse.__name__ = want  # argparse names the type in its messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a number > 0")
nonnegative_float = _number(float, lambda v: v >= 0, "a number >= 0")
unit_interval = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
open_unit_interval = _number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
image_size = _number(int, lambda v: v >= 32, "an integer >= 32")


def _parser() -> argparse.ArgumentParser:
    common = common_parser(PROG)
    p = argparse.ArgumentParser(
        prog=PROG, description="AUCSeg: pixel-level AUC loss + T-Memory Bank"
    )
    sub = p.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    d = sub.add_parser(
        "demo",
        parents=[common],
        formatter_class=fmt,
        help="CE vs CE+AUC vs CE+AUC+bank on synthetic scenes",
    )
    d.add_argument(
        "--iters", type=positive_int, default=1200, help="iterations per run (spec protocol: 3000)"
    )
    d.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds, one run per arm"
    )
    d.add_argument("--n-train", type=positive_int, default=2000, help="synthetic training scenes")
    d.add_argument("--n-val", type=positive_int, default=400, help="synthetic validation scenes")
    d.add_argument("--size", type=image_size, default=64, help="scene side in pixels")
    d.add_argument("--batch-size", type=positive_int, default=4, help="training batch size")
    d.add_argument("--backbone", default="resnet10t", help="any timm model with features_only")
    d.add_argument("--channels", type=positive_int, default=32, help="width of the FPN decoder")
    d.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="(seed, arm) runs trained at once in separate processes (same numbers)",
    )
    d.add_argument(
        "--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="which arms to train"
    )

    def data_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data", type=Path, required=True, help="dataset root folder")
        q.add_argument(
            "--layout", required=True, help="folder layout: ade20k | cityscapes | cocostuff"
        )
        q.add_argument(
            "--num-workers", type=nonnegative_int, default=0, help="DataLoader worker processes"
        )
        q.add_argument(
            "--img-scale",
            type=positive_int,
            nargs=2,
            default=[2048, 512],
            metavar=("LONG", "SHORT"),
            help="rescale images to fit LONG x SHORT (times the random ratio in training)",
        )

    t = sub.add_parser(
        "train",
        parents=[common],
        formatter_class=fmt,
        help="train on a dataset in its folder layout",
    )
    data_args(t)
    t.add_argument("--iters", type=positive_int, default=160_000, help="training iterations")
    t.add_argument(
        "--batch-size", type=positive_int, default=4, help="global batch size (all processes)"
    )
    t.add_argument("--crop", type=positive_int, default=512, help="square training crop (px)")
    t.add_argument("--lr", type=positive_float, default=6e-5, help="AdamW base learning rate")
    t.add_argument(
        "--head-lr-mult", type=positive_float, default=10.0, help="decoder learning-rate factor"
    )
    t.add_argument(
        "--warmup-iters", type=nonnegative_int, default=1500, help="linear warmup iterations"
    )
    t.add_argument(
        "--w-auc",
        type=nonnegative_float,
        default=None,
        help="AUC loss weight (None: 4 on ade20k, else 1); 0 = CE only",
    )
    t.add_argument(
        "--scale",
        choices=["code", "paper"],
        default="code",
        help="'code': the official 1/2 on the square loss; 'paper': the exact mean",
    )
    t.add_argument(
        "--surrogate",
        choices=["square", "exp", "hinge"],
        default="square",
        help="pairwise surrogate of the AUC loss",
    )
    t.add_argument(
        "--transform",
        choices=["ovo", "ova"],
        default="ovo",
        help="multi-class reduction: one-vs-one or one-vs-all",
    )
    t.add_argument(
        "--ova-reduction",
        choices=["sum", "mean"],
        default="sum",
        help="with --transform ova: sum the per-class terms (official) or average them",
    )
    t.add_argument("--no-bank", action="store_true", help="train without the T-Memory Bank")
    t.add_argument(
        "--tail",
        choices=["preset", "scan"],
        default="preset",
        help="tail classes: 'preset' (official small_index) or 'scan' (training pixel counts)",
    )
    t.add_argument(
        "--num-head",
        type=nonnegative_int,
        default=None,
        help="with --tail scan: number of head classes (instead of --head-share)",
    )
    t.add_argument(
        "--head-share",
        type=open_unit_interval,
        default=0.9,
        help="with --tail scan: pixel share the head classes cover",
    )
    t.add_argument(
        "--memory-size", type=positive_int, default=5, help="bank capacity S_M per tail class"
    )
    t.add_argument(
        "--p-sample",
        type=unit_interval,
        default=None,
        help="share of absent tail classes pasted per sample (None: the official value)",
    )
    t.add_argument(
        "--p-resize",
        type=open_unit_interval,
        default=None,
        help="scale of a pasted object (None: the official value)",
    )
    t.add_argument("--backbone", default="resnet18", help="any timm model with features_only")
    t.add_argument("--channels", type=positive_int, default=64, help="width of the FPN decoder")
    t.add_argument(
        "--dropout", type=unit_interval, default=0.1, help="decoder dropout before the classifier"
    )
    t.add_argument(
        "--norm",
        choices=["bn", "gn"],
        default="bn",
        help="decoder normalisation: BatchNorm (per process under torchrun) or GroupNorm",
    )
    t.add_argument("--pretrained", default="", help="local backbone checkpoint file (timm keys)")
    t.add_argument(
        "--sync-auc",
        action="store_true",
        help="under torchrun: AUC loss over all processes' pixels (default: per process, "
        "as mmseg's multi-GPU runs)",
    )

    e = sub.add_parser(
        "evaluate",
        parents=[common],
        formatter_class=fmt,
        help="dataset-level mIoU of a trained model",
    )
    data_args(e)
    e.add_argument("--checkpoint", type=Path, required=True, help="model.pt written by train")
    e.add_argument("--split", choices=["train", "val"], default="val", help="split to evaluate")

    b = sub.add_parser(
        "bench",
        parents=[common],
        formatter_class=fmt,
        help="loss scaling, bank cost, activation memory",
    )
    b.add_argument("--quick", action="store_true", help="small sizes for CI (<= 90 s)")
    return p


def _demo(args, device) -> int:
    from aucseg.demo import format_table, run_demo, write_demo_plot

    res = run_demo(
        iters=args.iters,
        seeds=args.seeds,
        n_train=args.n_train,
        n_val=args.n_val,
        size=args.size,
        batch_size=args.batch_size,
        backbone=args.backbone,
        channels=args.channels,
        jobs=args.jobs,
        data_seed=args.seed,
        device=device,
        arms=args.arms,
    )
    print(format_table(res))
    png = write_demo_plot(res, args.out)
    path = write_result(
        args.out,
        package=PROG,
        command="demo",
        dataset="synthetic-longtail-scenes (stand-in)",
        metrics={
            "mean": res["mean"],
            "std": res["std"],
            "per_seed": res["per_seed"],
            "acceptance": res["acceptance"],
            "data": res["dataset"],
        },
        memory=res["memory"],
        timings=res["timings"],
        config=res["config"],
        device=device,
        seed=args.seed,
    )
    print(f"wrote {path}, {png.name}")
    return 0


def _bank_for(args, layout, pairs):
    from aucseg.bank import TMemoryBank
    from aucseg.classes import OFFICIAL_BANK, select_tail_classes, small_index_preset
    from aucseg.data import pixel_counts

    counts = pixel_counts([a for _, a in pairs], layout.num_classes, layout.reduce_zero_label)
    if args.tail == "preset":
        tail = small_index_preset(layout.name)
    elif args.tail == "scan":
        cut = (
            {"num_head": args.num_head}
            if args.num_head is not None
            else {"head_share": args.head_share}
        )
        tail = select_tail_classes(counts, **cut)
    else:  # a --config file can bypass argparse's choices
        raise UserError(f"--tail must be 'preset' or 'scan', got {args.tail!r}")
    off = OFFICIAL_BANK[layout.name]
    bank = (
        None
        if args.no_bank
        else TMemoryBank(
            layout.num_classes,
            tail,
            memory_size=args.memory_size,
            p_sample=off["p_sample"] if args.p_sample is None else args.p_sample,
            p_resize=off["p_resize"] if args.p_resize is None else args.p_resize,
            seed=args.seed,
        )
    )
    return bank, tail, counts


def _train(args, device) -> int:
    from aucseg.classes import OFFICIAL_BANK, class_groups
    from aucseg.data import FolderSegmentation, find_pairs, get_layout
    from aucseg.model import build_segmenter
    from aucseg.train import TrainConfig, train

    layout = get_layout(args.layout)
    w_auc = OFFICIAL_BANK[layout.name]["w_auc"] if args.w_auc is None else args.w_auc
    cfg = TrainConfig(
        iters=args.iters,
        batch_size=args.batch_size,
        lr=args.lr,
        head_lr_mult=args.head_lr_mult,
        warmup_iters=args.warmup_iters,
        w_auc=w_auc,
        auc={
            "scale": args.scale,
            "surrogate": args.surrogate,
            "transform": args.transform,
            "ova_reduction": args.ova_reduction,
        },
        num_workers=args.num_workers,
        precision=args.precision,
        sync_auc=args.sync_auc,
    )
    pairs = find_pairs(args.data, args.layout, "train")
    bank, tail, counts = _bank_for(args, layout, pairs)
    ds = FolderSegmentation(
        args.data,
        args.layout,
        "train",
        crop=args.crop,
        bank=bank,
        scale=tuple(args.img_scale),
        seed=args.seed,
    )
    model = build_segmenter(
        layout.num_classes,
        args.backbone,
        checkpoint_path=args.pretrained,
        channels=args.channels,
        norm=args.norm,
        dropout=args.dropout,
    )
    with Timer() as t:
        hist = train(model, ds, cfg, device=device, seed=args.seed, coverage_classes=tail)
    if not dist.is_main():  # rank 0 writes the checkpoint and the results
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = args.out / "model.pt"
    tmp = ckpt.with_suffix(".pt.tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "num_classes": layout.num_classes,
            "layout": layout.name,
            "backbone": args.backbone,
            "channels": args.channels,
            "norm": args.norm,
            "pixel_counts": counts.tolist(),
            "tail": tail,
        },
        tmp,
    )
    tmp.replace(ckpt)  # never a half-written checkpoint
    config = {
        **asdict(cfg),
        "layout": layout.name,
        "tail": tail,
        "bank": repr(bank),
        "groups": class_groups(counts),
        "backbone": args.backbone,
        "channels": args.channels,
        "norm": args.norm,
        "dropout": args.dropout,
        "world_size": dist.world_size(),
        "per_rank_batch": args.batch_size // dist.world_size(),
    }
    write_result(
        args.out,
        package=PROG,
        command="train",
        dataset=f"{layout.name}:{args.data}",
        metrics=hist,
        timings={"train_s": t.elapsed},
        config=config,
        device=device,
        seed=args.seed,
    )
    print(json.dumps(hist, indent=2))
    print(f"wrote {ckpt}")
    return 0


def _evaluate(args, device) -> int:
    from aucseg.classes import class_groups
    from aucseg.data import FolderSegmentation, find_pairs, get_layout, pixel_counts
    from aucseg.model import build_segmenter
    from aucseg.train import evaluate, group_scores

    layout = get_layout(args.layout)
    if not args.checkpoint.is_file():
        raise UserError(f"checkpoint not found: {args.checkpoint}")
    try:
        ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        state, backbone = ckpt["model"], ckpt["backbone"]
    except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(
            f"{args.checkpoint} is not a checkpoint written by 'aucseg train' "
            f"({type(err).__name__})"
        ) from None
    if ckpt.get("num_classes") != layout.num_classes:
        raise UserError(
            f"checkpoint has {ckpt.get('num_classes')} classes, "
            f"{layout.name} has {layout.num_classes}"
        )
    counts = np.asarray(
        ckpt.get("pixel_counts")
        or pixel_counts(
            [a for _, a in find_pairs(args.data, args.layout, "train")],
            layout.num_classes,
            layout.reduce_zero_label,
        )
    )
    model = build_segmenter(
        layout.num_classes,
        backbone,
        channels=ckpt.get("channels", 64),
        norm=ckpt.get("norm", "bn"),
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"{args.checkpoint} does not fit the model it names: {first}") from None
    ds = FolderSegmentation(
        args.data, args.layout, args.split, train=False, scale=tuple(args.img_scale)
    )
    with dist.autocast(args.precision, device):
        cm = evaluate(model, ds, layout.num_classes, device=device, batch_size=1)
    scores = group_scores(cm, class_groups(counts))
    if not dist.is_main():
        return 0
    write_result(
        args.out,
        package=PROG,
        command="evaluate",
        dataset=f"{layout.name}:{args.data}",
        metrics={**scores, "per_class_IoU": cm.iou().tolist()},
        device=device,
        config={
            "checkpoint": str(args.checkpoint),
            "split": args.split,
            "precision": args.precision,
            "world_size": dist.world_size(),
        },
        seed=args.seed,
    )
    print(json.dumps(scores, indent=2))
    return 0


def _bench(args, device) -> int:
    from aucseg.bench import run_bench

    with Timer() as t:
        res, claims = run_bench(quick=args.quick)
    path = write_result(
        args.out,
        package=PROG,
        command="bench",
        dataset="synthetic tensors",
        metrics=res,
        timings={"bench_s": t.elapsed},
        config={"quick": args.quick},
        device="cpu",
        seed=args.seed,
        claims=claims,
    )
    from aucseg.bench import write_plots

    pngs = write_plots(res, args.out)
    for c in claims:
        ratio = f" (ratio {c.ratio:.3g})" if c.ratio is not None else ""
        base = f" vs {c.baseline:.4g}" if c.baseline is not None else ""
        verdict = ""
        if c.threshold is not None:
            met = c.value <= c.threshold if not c.higher_is_better else c.value >= c.threshold
            sign = ">=" if c.higher_is_better else "<="
            verdict = f" [{'met' if met else 'MISSED'}: {sign} {c.threshold:g}]"
        print(f"{c.claim}: {c.value:.4g} {c.unit}{base}{ratio}{verdict}")
    print(f"wrote {path}, " + ", ".join(p.name for p in pngs))
    return 0


@error_boundary(PROG)
def main(argv: list[str] | None = None) -> int:
    args = parse_args(_parser(), argv)
    seed_everything(args.seed)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise UserError(str(err)) from None
    if args.command in ("train", "evaluate"):  # under torchrun: one process per device
        device = dist.init(device).device
        try:
            return {"train": _train, "evaluate": _evaluate}[args.command](args, device)
        finally:
            dist.shutdown()
    return {"demo": _demo, "bench": _bench}[args.command](args, device)


if __name__ == "__main__":
    sys.exit(main())
