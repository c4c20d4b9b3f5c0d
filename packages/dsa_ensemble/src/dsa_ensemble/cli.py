"""``dsa_ensemble demo | train | evaluate | bench``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from dsa_ensemble.config import HELP, DSAConfig
from labcore import dist
from labcore.cli import (
    UserError,
    common_parser,
    error_boundary,
    nonnegative_int,
    parse_args,
    positive_int,
    progress,
    unit_interval,
)
from labcore.runs import Claim, Timer, seed_everything, write_result

PACKAGE = "dsa_ensemble"
CKPT = "dsa_ensemble_model.pt"
# pre-registered bench targets (issue 13 / spec A6), reported as met or missed, never retuned
TARGET_TIME_RATIO, TARGET_MEMORY_RATIO, TARGET_CORR_GAP = 1.3, 1.3, 0.05
_INT_NONNEG = {"steps_per_epoch", "blank_num", "ensemble_warmup", "count_thr_min",
               "count_thr_max"}  # fmt: skip


def _add_config(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and training (DSAConfig; defaults: the official CIFAR recipe)")
    for f in fields(DSAConfig):
        flag = "--" + f.name.replace("_", "-")
        helptext = HELP.get(f.name, f.name)
        if f.type in ("bool", bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                           help=helptext)  # fmt: skip
        elif f.type == "int":
            kind = nonnegative_int if f.name in _INT_NONNEG else positive_int
            g.add_argument(flag, type=kind, default=f.default, help=helptext)
        elif f.type in ("float", "float | None"):
            g.add_argument(flag, type=float, default=f.default, help=helptext)
        else:
            g.add_argument(flag, type=str, default=f.default, help=helptext)


def _add_data(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        type=Path,
        required=required,
        help="CIFAR pickle folder or ImageFolder root (with train/ and test/ or not)",
    )
    g.add_argument(
        "--format",
        choices=["cifar", "imagefolder"],
        default="cifar",
        help="on-disk layout of --data",
    )
    g.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        help="resize ImageFolder images to this square size (default: keep, all equal)",
    )
    g.add_argument("--corruption", type=float, nargs="+", default=[0.0, 0.3],
                   help="test-time Gaussian noise sigmas to evaluate")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    common = common_parser(PACKAGE, threads=1)
    parser = argparse.ArgumentParser(prog=PACKAGE, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", parents=[common], help="spec A6 on sklearn digits (offline)")
    demo.add_argument("--epochs", type=positive_int, default=10, help="supervised epochs per run")
    demo.add_argument("--seeds", type=positive_int, default=3, help="seeds seed, seed+1, ...")
    demo.add_argument("--arms", nargs="+", default=None, help="subset of the supervised arms")
    demo.add_argument("--noise", type=unit_interval, nargs="+", default=[0.0, 0.2, 0.4],
                      help="symmetric label-noise rates")  # fmt: skip
    demo.add_argument("--ssl-epochs", type=nonnegative_int, default=12,
                      help="SSL epochs of 20 steps (0 skips the SSL arm)")  # fmt: skip
    train = sub.add_parser("train", parents=[common], help="train on CIFAR / ImageFolder data")
    _add_data(train)
    train.add_argument("--ssl", action="store_true", help="FreeMatch semi-supervised training")
    train.add_argument(
        "--split-file",
        type=Path,
        default=None,
        help="official labelled-split JSON ([labelled, unlabelled] indices)",
    )
    train.add_argument(
        "--labels-per-class",
        type=positive_int,
        default=4,
        help="--ssl without --split-file: labelled samples per class (seeded)",
    )
    train.add_argument(
        "--val-fraction",
        type=unit_interval,
        default=0.1,
        help="held-out share of the training split for model selection",
    )
    train.add_argument(
        "--weights",
        type=str,
        default=None,
        help="local backbone weights (timm state dict / safetensors)",
    )
    _add_config(train)
    ev = sub.add_parser("evaluate", parents=[common], help="evaluate a saved model")
    ev.add_argument("--checkpoint", type=Path, required=True, help=f"the {CKPT} file of train")
    _add_data(ev)
    ev.add_argument("--split", choices=["train", "test"], default="test", help="split to score")
    ev.add_argument("--ensemble-batch", type=positive_int, default=64,
                    help="batch size of the code's agreement-weighted ensemble")  # fmt: skip
    bench = sub.add_parser("bench", parents=[common], help="overhead vs single head / ensemble")
    bench.add_argument("--quick", action="store_true", help="WRN-28-2 only, few steps (CI)")
    return parser


def _config(args) -> DSAConfig:
    return DSAConfig(**{f.name: getattr(args, f.name) for f in fields(DSAConfig)})


def _fmt(x) -> str:
    return "   n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:6.3f}"


def _demo(args, device) -> int:
    from dsa_ensemble import demo as D

    arms = args.arms or list(D.ARMS)
    unknown = set(arms) - set(D.ARMS)
    if unknown:
        raise UserError(f"unknown arms {sorted(unknown)}; choose from {', '.join(D.ARMS)}")
    seeds = [args.seed + i for i in range(args.seeds)]
    per_seed = {a: {n: [] for n in args.noise} for a in arms}
    ssl_rows: dict = {}
    jobs = [(a, n, s) for n in args.noise for s in seeds for a in arms]
    with Timer() as timer:
        for a, n, s in progress(jobs, desc="supervised runs"):
            r = D.run_supervised(a, s, n, args.epochs, device)
            per_seed[a][n].append(r)
            h = r["sigma=0.3"]
            print(
                f"  {a:13s} noise {n:.1f} seed {s}: acc {r['sigma=0.0']['accuracy']:.3f}, "
                f"sigma 0.3 acc {h['accuracy']:.3f} nll {h['nll']:.2f} corr "
                f"{_fmt(h['head_correlation'])} ({r['train_seconds']:.0f} s)",
                flush=True,
            )
        if args.ssl_epochs:
            for a in ("freematch", "dsa_freematch"):
                for s in progress(seeds, desc=a):
                    r = D.run_ssl_arm(a, s, args.ssl_epochs, device=device)
                    ssl_rows.setdefault(a, []).append(r)
                    print(
                        f"  {a:13s} seed {s}: acc {r['accuracy']:.3f}, PL acc "
                        f"{_fmt(r['pl_accuracy_train'])} at mask rate "
                        f"{r['mask_rate_train']:.2f} ({r['train_seconds']:.0f} s)",
                        flush=True,
                    )
    mean = D.summarise(per_seed)
    ssl = D.ssl_summary(ssl_rows) if ssl_rows else None
    checks = D.acceptance(mean, ssl)
    print(f"sklearn digits 1000 train / 797 test, mean of seeds {seeds}, {args.epochs} epochs; "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    cols = ["accuracy", "nll", "ece", "brier", "mean_head_accuracy", "ensemble_gain",
            "head_correlation", "head_disagreement"]  # fmt: skip
    for n in args.noise:
        for sig in D.SIGMAS:
            key = f"sigma={sig}"
            print(f"label noise {n}, test {key}")
            print(f"  {'arm':14s} " + " ".join(f"{c[:10]:>10s}" for c in cols))
            for a in arms:
                print(f"  {a:14s} " + " ".join(f"{_fmt(mean[a][n][key][c]):>10s}" for c in cols))
    if ssl:
        print("SSL (5 labels per class): " + "; ".join(
            f"{a}: acc {v['accuracy']:.3f}, PL acc at FreeMatch's rate "
            f"{_fmt(v.get('pl_accuracy_at_freematch_rate'))}" for a, v in ssl.items()))  # fmt: skip
    for name, c in checks.items():
        vals = ", ".join(f"{k}={v:.3f}" for k, v in c.items() if isinstance(v, float))
        print(f"[{'met' if c['met'] else 'MISSED'}] {name}: {c['rule']}  {vals}")
    out = Path(args.out)
    if dist.is_main():
        demo_plots(out, per_seed, ssl_rows, max(args.noise))
    for rows in ssl_rows.values():
        for r in rows:
            r.pop("pool_conf"), r.pop("pool_correct")
    path = write_result(out, package=PACKAGE, command="demo",
                        dataset="sklearn digits 8x8 (1000 train / 797 test), offline",
                        metrics={"mean": {a: {str(n): v for n, v in d.items()}
                                          for a, d in mean.items()},
                                 "ssl": ssl, "acceptance": checks,
                                 "per_seed": {a: {str(n): v for n, v in d.items()}
                                              for a, d in per_seed.items()},
                                 "ssl_per_seed": ssl_rows},
                        timings={"total_seconds": timer.elapsed},
                        config={"arms": arms, "epochs": args.epochs, "seeds": seeds,
                                "noise": args.noise, "sigmas": list(D.SIGMAS),
                                "ssl_epochs": args.ssl_epochs, "threads": torch.get_num_threads(),
                                "supervised": D.demo_config("dsa", args.epochs).as_dict()},
                        device=device, seed=args.seed)  # fmt: skip
    print(f"wrote {path} (and PNGs) in {timer.elapsed:.0f} s")
    return 0


def demo_plots(out: Path, per_seed: dict, ssl_rows: dict, hard: float) -> None:
    """Accuracy and NLL bars of the supervised arms at the hardest noise, sigma 0.3; SSL bars."""
    from labcore.plot import bar_plot

    def stat(rows, get):
        vals = [get(r) for r in rows]
        return float(np.mean(vals)), float(np.std(vals))

    for metric in ("accuracy", "nll"):
        vals = {
            a: stat(d[hard], lambda r, m=metric: r["sigma=0.3"][m]) for a, d in per_seed.items()
        }
        bar_plot(
            out / f"dsa_ensemble_demo_{metric}.png",
            vals,
            ylabel=metric,
            title=f"digits, label noise {hard}, test sigma 0.3 (mean +- std over seeds)",
        )
    corr = {a: stat(d[hard], lambda r: r["sigma=0.3"]["head_correlation"])
            for a, d in per_seed.items() if a != "single"}  # fmt: skip
    bar_plot(out / "dsa_ensemble_demo_head_correlation.png", corr,
             ylabel="mean pairwise Pearson of head softmax",
             title=f"head correlation, label noise {hard}, test sigma 0.3")  # fmt: skip
    if ssl_rows:
        vals = {a: stat(rows, lambda r: r["accuracy"]) for a, rows in ssl_rows.items()}
        bar_plot(out / "dsa_ensemble_demo_ssl.png", vals, ylabel="test accuracy",
                 title="digits SSL, 5 labels per class (clean test)")  # fmt: skip


def _load(args, split: str):
    from dsa_ensemble.data import load_dataset

    return load_dataset(args.data, args.format, split, args.image_size)


def _evaluate_sets(model, test, corruption, device, precision, agreement_batch=64) -> dict:
    from dsa_ensemble.data import corrupt
    from dsa_ensemble.metrics import ensemble_metrics
    from dsa_ensemble.train import predict

    out = {}
    idx = dist.shard(len(test))
    for sigma in corruption:
        if sigma < 0:
            raise UserError(f"corruption sigma must be >= 0, got {sigma}")
        x = corrupt(test.x[idx], sigma, seed=1000 + dist.rank())
        z = predict(model, x, device, precision=precision)  # (S, n_rank, K)
        z = dist.all_gather_cat(z.transpose(0, 1).contiguous()).transpose(0, 1)
        y = dist.all_gather_cat(test.y[idx])
        m = ensemble_metrics(z, y, agreement_batch)
        out[f"sigma={sigma}"] = m
    return out


def _print_eval(metrics: dict) -> None:
    for key, m in metrics.items():
        print(f"  {key}: acc {m['accuracy']:.4f} nll {m['nll']:.3f} ece {m['ece']:.3f} brier "
              f"{m['brier']:.3f} | mean head {m['mean_head_accuracy']:.4f} gain "
              f"{m['ensemble_gain']:+.4f} | corr {_fmt(m['head_correlation'])} disagree "
              f"{_fmt(m['head_disagreement'])} | agreement-weighted "
              f"{m['agreement_accuracy']:.4f}")  # fmt: skip


def _train(args, state) -> int:
    from dsa_ensemble.data import load_labeled_split, ssl_split
    from dsa_ensemble.train import build_model, fit

    device = state.device
    cfg = _config(args)
    train_set = _load(args, "train")
    try:
        test_set = _load(args, "test")
    except (FileNotFoundError, UserError):
        test_set = None
    n = len(train_set)
    if n < 2:
        raise UserError(f"{args.data}: {n} training image(s); need at least 2")
    rng = np.random.default_rng(args.seed)
    unlabeled = unl_targets = None
    if args.ssl:
        if args.split_file is not None:
            lab, unl = load_labeled_split(args.split_file, n)
        else:
            lab, unl = ssl_split(train_set.y, args.labels_per_class, seed=args.seed)
        n_val = round(args.val_fraction * len(unl))
        perm = rng.permutation(unl)
        val_idx, unl = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        if len(unl) == 0:
            raise UserError("no unlabelled sample left for --ssl")
        unlabeled, unl_targets = train_set.subset(unl), train_set.y[unl]
        labeled = train_set.subset(lab)
    else:
        perm = rng.permutation(n)
        n_val = round(args.val_fraction * n)
        val_idx, lab = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        labeled = train_set.subset(lab)
    val = train_set.subset(val_idx) if len(val_idx) else None
    seed_everything(args.seed)
    model = build_model(cfg, train_set.num_classes, train_set.x.shape[1], train_set.x.shape[-1],
                        weights=args.weights)  # fmt: skip
    print(f"{train_set.source}: {len(labeled)} labelled, "
          f"{len(unlabeled) if unlabeled is not None else 0} unlabelled, "
          f"{len(val_idx)} validation; {cfg.backbone} + {cfg.heads} x {cfg.head_type} heads; "
          f"world size {state.world_size}")  # fmt: skip
    res = fit(
        cfg,
        labeled,
        val,
        unlabeled=unlabeled,
        unlabeled_targets=unl_targets,
        model=model,
        device=device,
        precision=args.precision,
        seed=args.seed,
        progress=progress,
    )
    metrics = {"best_epoch": res.best_epoch, "best_val_accuracy": res.best_val_accuracy,
               "history": res.history, "pseudo_labels": res.pseudo_labels}  # fmt: skip
    if test_set is not None:
        metrics["test"] = _evaluate_sets(res.eval_model, test_set, args.corruption, device,
                                         args.precision)  # fmt: skip
        print(f"best epoch {res.best_epoch} (val acc {_fmt(res.best_val_accuracy)}); test:")
        _print_eval(metrics["test"])
    out = Path(args.out)
    ckpt = out / CKPT
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(".pt.tmp")
        torch.save({"state_dict": res.eval_model.state_dict(), "config": cfg.as_dict(),
                    "classes": train_set.classes, "in_chans": int(train_set.x.shape[1]),
                    "input_size": int(train_set.x.shape[-1])}, tmp)  # fmt: skip
        tmp.replace(ckpt)
    path = write_result(out, package=PACKAGE, command="train", dataset=train_set.source,
                        metrics=metrics, timings={"train_seconds": res.seconds, "steps": res.steps},
                        config={**cfg.as_dict(), "ssl": args.ssl, "precision": args.precision,
                                "world_size": state.world_size, "checkpoint": str(ckpt),
                                "split_file": str(args.split_file) if args.split_file else None},
                        device=device, seed=args.seed)  # fmt: skip
    if dist.is_main():
        print(f"wrote {path} and {ckpt}")
    return 0


def _evaluate(args, state) -> int:
    from dsa_ensemble.train import build_model

    if not args.checkpoint.is_file():
        raise FileNotFoundError(f"no such checkpoint: {args.checkpoint}")
    try:
        ck = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        cfg = DSAConfig.from_dict(ck["config"])
        model = build_model(cfg, len(ck["classes"]), ck["in_chans"], ck["input_size"])
        model.load_state_dict(ck["state_dict"])
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{args.checkpoint}: not a dsa_ensemble checkpoint "
                        f"({type(e).__name__})") from None  # fmt: skip
    data = _load(args, args.split)
    if tuple(data.x.shape[1:]) != (ck["in_chans"], ck["input_size"], ck["input_size"]):
        raise UserError(f"{args.data}: images {tuple(data.x.shape[1:])} but the model was trained "
                        f"on {(ck['in_chans'], ck['input_size'], ck['input_size'])}")  # fmt: skip
    if data.num_classes != len(ck["classes"]):
        raise UserError(f"{args.data}: {data.num_classes} classes, checkpoint has "
                        f"{len(ck['classes'])}")  # fmt: skip
    model = model.to(state.device)
    with Timer() as t:
        metrics = _evaluate_sets(model, data, args.corruption, state.device, args.precision,
                                 args.ensemble_batch)  # fmt: skip
    _print_eval(metrics)
    path = write_result(args.out, package=PACKAGE, command="evaluate", dataset=data.source,
                        metrics=metrics, timings={"evaluate_seconds": t.elapsed},
                        config={**cfg.as_dict(), "checkpoint": str(args.checkpoint),
                                "split": args.split, "precision": args.precision},
                        device=state.device, seed=args.seed)  # fmt: skip
    if dist.is_main():
        print(f"wrote {path}")
    return 0


def _bench(args, state) -> int:
    from dsa_ensemble.bench import run_bench
    from labcore.memory import format_bytes
    from labcore.plot import bar_plot

    with Timer() as t:
        r = run_bench(quick=args.quick, seed=args.seed, progress=progress)
    claims = []
    for key, arms in r.items():
        if key == "decorrelation":
            continue
        print(f"{key} (batch {arms['single']['batch']}, torch threads {torch.get_num_threads()})")
        for arm, m in arms.items():
            print(f"  {arm:16s} params {m['params'] / 1e6:7.2f} M ({m['params_ratio']:.2f}x)  "
                  f"fwd {m['gflops_per_image']:.3f} GFLOP/img ({m['flops_ratio']:.2f}x)  step "
                  f"{m['step_seconds']:.3f} s ({m['time_ratio']:.2f}x)  peak "
                  f"{format_bytes(m['peak_step_bytes'])} ({m['memory_ratio']:.2f}x)")  # fmt: skip
        d, e = arms["dsa"], arms["deep_ensemble_5"]
        claims += [
            Claim(f"DSA training-step time vs one head ({key}); target <= {TARGET_TIME_RATIO}x",
                  "step_time_ratio", d["time_ratio"], None, "x", TARGET_TIME_RATIO, False),
            Claim(f"DSA peak step memory vs one head ({key}); target <= {TARGET_MEMORY_RATIO}x",
                  "peak_memory_ratio", d["memory_ratio"], None, "x", TARGET_MEMORY_RATIO, False),
            Claim(f"DSA step time vs a 5-model deep ensemble ({key}); target < 1x",
                  "step_time_ratio_vs_ensemble", d["step_seconds"] / e["step_seconds"], None,
                  "x", 1.0, False),
            Claim(f"DSA parameters vs one head ({key}), reported", "params_ratio",
                  d["params_ratio"], None, "x"),
            Claim(f"DSA forward FLOPs vs one head ({key}), reported", "flops_ratio",
                  d["flops_ratio"], None, "x"),
        ]  # fmt: skip
        if dist.is_main():
            bar_plot(
                Path(args.out) / f"dsa_ensemble_bench_{key.replace('@', '_')}.png",
                {a: (m["time_ratio"], 0.0) for a, m in arms.items()},
                ylabel="step time / one head",
                title=f"training-step overhead, {key}",
            )
    dc = r["decorrelation"]
    gap = dc["mhe"]["head_correlation"] - dc["dsa"]["head_correlation"]
    print(f"decorrelation (digits, noise 0.4, sigma 0.3, equal steps): corr MHE "
          f"{dc['mhe']['head_correlation']:.4f} vs DSA {dc['dsa']['head_correlation']:.4f}; "
          f"disagreement MHE {dc['mhe']['head_disagreement']:.3f} vs DSA "
          f"{dc['dsa']['head_disagreement']:.3f}")  # fmt: skip
    claims += [
        Claim(f"head-correlation drop of DSA vs MHE at equal steps; target >= {TARGET_CORR_GAP}",
              "corr_mhe_minus_dsa", gap, None, "", TARGET_CORR_GAP, True),
        Claim("head disagreement, DSA vs MHE (digits, equal steps), reported", "disagreement",
              dc["dsa"]["head_disagreement"], dc["mhe"]["head_disagreement"], ""),
    ]  # fmt: skip
    for c in claims:
        if c.threshold is not None:
            print(f"[{'met' if c.met else 'MISSED'}] {c.claim}: {c.value:.3f}")
    path = write_result(args.out, package=PACKAGE, command="bench",
                        dataset="random CIFAR-size / 224 px tensors; sklearn digits",
                        metrics=r, timings={"bench_seconds": t.elapsed},
                        memory={k: {a: m["peak_step_bytes"] for a, m in v.items()}
                                for k, v in r.items() if k != "decorrelation"},
                        config={"quick": args.quick, "threads": torch.get_num_threads()},
                        device=state.device, seed=args.seed, claims=claims)  # fmt: skip
    print(f"wrote {path} in {t.elapsed:.0f} s")
    return 0


@error_boundary(PACKAGE)
def main(argv=None) -> int:
    """Entry point of the ``dsa_ensemble`` console script."""
    args = parse_args(_parser(), argv)
    state = dist.init(args.device)
    try:
        dist.check_precision(args.precision, state.device)
        if args.command == "demo":
            return _demo(args, state.device)
        return {"train": _train, "evaluate": _evaluate, "bench": _bench}[args.command](args, state)
    finally:
        dist.shutdown()


if __name__ == "__main__":
    sys.exit(main())
