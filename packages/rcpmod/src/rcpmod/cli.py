"""``rcpmod demo | train | evaluate | bench``."""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

import numpy as np
import torch

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
from labcore.runs import Claim, resolve_device, write_result
from rcpmod.data import OFFICIAL, SHIPPED, load_official, load_shipped
from rcpmod.detector import RCPMOD
from rcpmod.experiments import COLUMNS, acceptance, run_grid, summarise
from rcpmod.protocol import RATE_PERMUTATIONS

PACKAGE = "rcpmod"
DEMO_DATASETS = ("breast_cancer", "wine", "digits")
# detector arguments set by the common flags or by the command, not exposed one by one
_NOT_FLAGS = {"device", "precision", "dtype", "random_state", "verbose", "contamination"}
_TYPES = {"hidden": int, "latent": int, "epochs": int, "memory_size": int, "neg_rank": int,
          "change_neg_epoch": int, "schedule_epochs": int, "warmup_max": float,
          "sr_final": float, "sr_weight": float, "rw": float}  # fmt: skip
_HELP = {
    "preset": "official per-dataset recipe (scene15, landuse21, bdgp, handwritten, fashion) or "
              "cpu256 (width 256, for CPUs)",
    "hidden": "encoder widths between input and latent (default: the preset's)",
    "shuffle": "fresh: new batches each epoch from the seed; fixed: the official "
               "random_state=1 quirk (same batches every epoch)",
    "impute": "crt (the method) or zero latents for missing views (ablation)",
    "pair_average": "nonzero (official) or participating pairs",
    "sr_weight": "constant spreading weight instead of the w(t) schedule (ablation)",
}  # fmt: skip


def _add_detector(p: argparse.ArgumentParser) -> None:
    """One flag per RCPMOD hyperparameter, from its signature (one source of truth)."""
    g = p.add_argument_group("detector (RCPMOD arguments; default None = the preset's value)")
    for name, par in inspect.signature(RCPMOD.__init__).parameters.items():
        if name == "self" or name in _NOT_FLAGS:
            continue
        flag = "--" + name.replace("_", "-")
        default = par.default
        helptext = _HELP.get(name, f"RCPMOD({name}=...)")
        if isinstance(default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                           help=helptext)  # fmt: skip
        elif name == "hidden":
            g.add_argument(flag, type=positive_int, nargs="+", default=None, help=helptext)
        elif default is None:
            g.add_argument(flag, type=_TYPES[name], default=None, help=helptext)
        else:
            g.add_argument(flag, type=type(default), default=default, help=helptext)


def _detector_kwargs(args, device: torch.device) -> dict:
    names = [n for n in inspect.signature(RCPMOD.__init__).parameters
             if n != "self" and n not in _NOT_FLAGS]  # fmt: skip
    kw = {n: getattr(args, n) for n in names if hasattr(args, n)}
    if kw.get("hidden") is not None:
        kw["hidden"] = tuple(kw["hidden"])
    kw["device"] = str(device)
    dist.check_precision(args.precision, device)
    kw["precision"] = args.precision
    # float64 is the method's; bf16/fp16 autocast needs float32 weights (autocast skips float64)
    kw["dtype"] = "float64" if args.precision == "fp32" else "float32"
    try:
        RCPMOD(**kw).resolved_params()
    except ValueError as e:
        raise UserError(str(e)) from None
    return kw


def _add_protocol(p: argparse.ArgumentParser, seeds: int, perms: int) -> None:
    g = p.add_argument_group("protocol (official run.py)")
    g.add_argument("--seeds", type=positive_int, default=seeds,
                   help="data seeds seed+1 .. seed+N (official: 1..5)")  # fmt: skip
    g.add_argument("--perms", type=positive_int, default=perms,
                   help="how many of the 6 (class, attribute, class-attribute) rate "
                        "permutations of (0.02, 0.05, 0.08), in order")  # fmt: skip
    g.add_argument("--missing-rate", type=unit_interval, default=0.3, help="official mr")
    g.add_argument(
        "--baselines-backend",
        choices=["auto", "builtin", "pyod"],
        default="auto",
        help="auto: PyOD when installed, else the built-in re-implementations",
    )


def _parser() -> argparse.ArgumentParser:
    # one thread by default: the per-batch kernels are small, and oversubscribed cores stall
    # OpenMP barriers (measured here: several times slower with 2 threads on a loaded machine)
    common = common_parser(PACKAGE, threads=1)
    parser = argparse.ArgumentParser(prog=PACKAGE, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="B6 on shipped data: RCPMOD vs baselines, AUC per outlier type",
    )
    demo.add_argument("--datasets", nargs="+", default=list(DEMO_DATASETS), choices=SHIPPED,
                      help="shipped datasets")  # fmt: skip
    demo.add_argument(
        "--digits-runs",
        type=nonnegative_int,
        default=6,
        help="cap on protocol runs for the digits datasets (0: the full grid)",
    )
    demo.add_argument(
        "--r5-dataset",
        default="wine",
        choices=[*SHIPPED, "none"],
        help="dataset of the missing-view checks (R5); none to skip",
    )
    demo.add_argument(
        "--ablations",
        action="store_true",
        help="R7: no memory bank / no L_nac / no L_sr / w = 0.2 on breast_cancer",
    )
    _add_protocol(demo, seeds=3, perms=6)  # B6 asks 5 seeds: --seeds 5 (budget, README)
    _add_detector(demo)
    for name in ("train", "evaluate"):
        p = sub.add_parser(
            name,
            parents=[common],
            help=(
                "the official protocol on a dataset file: fit RCPMOD, write scores and AUCs"
                if name == "train"
                else "AUCs of saved RCPMOD scores and of the baselines on the same protocol runs"
            ),
        )
        p.add_argument(
            "--dataset",
            required=True,
            choices=[*OFFICIAL, *SHIPPED],
            help="official dataset (needs --data or $LABCORE_DATA/rcpmod) or shipped",
        )
        p.add_argument("--data", type=Path, default=None,
                       help="the .mat/.npz file or the folder holding it")  # fmt: skip
        if name == "evaluate":
            p.add_argument(
                "--scores",
                type=Path,
                default=None,
                help="rcpmod_scores.npz written by train (default: in --out)",
            )
        _add_protocol(p, seeds=5, perms=6)
        if name == "train":
            _add_detector(p)
    bench = sub.add_parser(
        "bench",
        parents=[common],
        help="score/neighbour/fit scaling vs the official way; AUC vs baselines",
    )
    bench.add_argument("--quick", action="store_true", help="small n (CI, < 60 s)")
    return parser


def _backend(name: str) -> str:
    if name != "auto":
        return name
    try:
        import pyod  # noqa: F401

        return "pyod"
    except ImportError:
        return "builtin"


def _table(title: str, summary: dict) -> str:
    lines = [title, f"{'method':14s} " + " ".join(f"{c:>17s}" for c in COLUMNS)]
    for m, cols in summary.items():
        cells = [f"{cols[c]['mean']:.3f} ± {cols[c]['std']:.3f}" for c in COLUMNS]
        lines.append(f"{m:14s} " + " ".join(f"{x:>17s}" for x in cells))
    return "\n".join(lines)


def _strip(runs):
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]


def _demo(args, device) -> int:
    from rcpmod.baselines import BASELINES

    det = _detector_kwargs(args, device)
    backend = _backend(args.baselines_backend)
    seeds = [args.seed + 1 + i for i in range(args.seeds)]
    perms = RATE_PERMUTATIONS[: args.perms]
    summaries, all_runs, extra = {}, {}, {}
    t0 = time.perf_counter()
    print(f"RCPMOD demo: {', '.join(args.datasets)}; seeds {seeds}; {len(perms)} rate "
          f"permutations; mr {args.missing_rate}; baselines: {backend}", flush=True)  # fmt: skip
    for name in args.datasets:
        data = load_shipped(name, seed=args.seed)
        jobs = [(r, s) for r in perms for s in seeds]
        if name.startswith("digits") and args.digits_runs and len(jobs) > args.digits_runs:
            jobs = [
                (perms[i % len(perms)], seeds[i // len(perms)]) for i in range(args.digits_runs)
            ]
        runs = []
        for rates, seed in progress(jobs, desc=name):
            runs.extend(run_grid(data, [seed], [rates], args.missing_rate, det, BASELINES,
                                 backend))  # fmt: skip
        summaries[name] = summarise(runs)
        all_runs[name] = _strip(runs)
        fit_s = [r["fit_seconds"] for r in runs]
        print(_table(f"\n{data.describe()} — {len(runs)} runs, AUC mean ± std; RCPMOD fit "
                     f"{np.mean(fit_s):.1f} s/run", summaries[name]), flush=True)  # fmt: skip
    if args.r5_dataset != "none":
        extra["mr"] = _r5(args, det, seeds)
        print(f"\nR5 ({args.r5_dataset}): {extra['mr']}", flush=True)
    first = args.datasets[0]
    data = load_shipped(first, seed=args.seed)
    kw = {**det, "random_state": seeds[0]}
    from rcpmod.protocol import make_run_data

    inj = make_run_data(data, perms[0], args.missing_rate, seeds[0])
    t = time.perf_counter()
    a = RCPMOD(**kw).fit(inj.views, inj.mask).decision_scores_
    once = time.perf_counter() - t
    b = RCPMOD(**kw).fit(inj.views, inj.mask).decision_scores_
    fits = [r["fit_seconds"] for runs in all_runs.values() for r in runs]
    extra["determinism"] = {"dataset": first, "identical": bool(np.array_equal(a, b)),
                            "max_fit_seconds": float(max([*fits, once])),
                            "mean_fit_seconds": float(np.mean([*fits, once]))}  # fmt: skip
    ablations = _r7(args, det, seeds) if args.ablations else None
    checks = acceptance(summaries, extra)
    print()
    for name, c in checks.items():
        nums = ", ".join(f"{k}={v:.3f}" for k, v in c.items() if isinstance(v, float))
        print(f"[{'met' if c['met'] else 'MISSED'}] {name}: {c['rule']}  ({nums})")
    if ablations:
        print("\nR7 ablations (breast_cancer, total AUC, mean ± std over seeds; not gated):")
        for k, v in ablations.items():
            print(f"  {k:14s} {v['mean']:.4f} ± {v['std']:.4f}  delta {v['delta']:+.4f}")
    elapsed = time.perf_counter() - t0
    out = Path(args.out)
    if dist.is_main():
        from labcore.plot import bar_plot

        out.mkdir(parents=True, exist_ok=True)
        for name, s in summaries.items():
            bar_plot(out / f"rcpmod_demo_{name}.png",
                     {m: (s[m]["class"]["mean"], s[m]["class"]["std"]) for m in s},
                     ylabel="class-outlier AUC", title=f"{name}: class-outlier AUC")  # fmt: skip
    path = write_result(out, package=PACKAGE, command="demo", dataset=", ".join(args.datasets),
                        metrics={"summary": summaries, "acceptance": checks, "extra": extra,
                                 "ablations": ablations, "runs": all_runs},
                        timings={"total_seconds": elapsed}, config={**det, "seeds": seeds,
                        "perms": [list(p) for p in perms], "missing_rate": args.missing_rate,
                        "baselines_backend": backend, "digits_runs": args.digits_runs},
                        device=device, seed=args.seed)  # fmt: skip
    print(f"wrote {path} ({elapsed:.0f} s)")
    return 0


def _r5(args, det, seeds) -> dict:
    from rcpmod.protocol import run_once

    data = load_shipped(args.r5_dataset, seed=args.seed)
    rates = (0.05, 0.02, 0.08)
    res = {}
    for label, mr, kw in (
        ("mr0", 0.0, det),
        ("mr0.5", 0.5, det),
        ("mr0.3_crt", 0.3, det),
        ("mr0.3_zero", 0.3, {**det, "impute": "zero"}),
    ):
        vals = [run_once(data, rates, mr, s, kw)["RCPMOD"]["total"]
                for s in progress(seeds, desc=f"R5 {label}")]  # fmt: skip
        res[label] = float(np.mean(vals))
    return {"dataset": args.r5_dataset, "total_mr0": res["mr0"], "total_mr0.5": res["mr0.5"],
            "total_crt": res["mr0.3_crt"], "total_zero": res["mr0.3_zero"],
            "crt_minus_zero": res["mr0.3_crt"] - res["mr0.3_zero"]}  # fmt: skip


def _r7(args, det, seeds) -> dict:
    from rcpmod.protocol import run_once

    data = load_shipped("breast_cancer", seed=args.seed)
    arms = {"full": {}, "no memory": {"use_memory": False}, "no L_nac": {"use_nac": False},
            "no L_sr": {"use_sr": False}, "w = 0.2": {"sr_weight": 0.2}}  # fmt: skip
    out = {}
    for arm, kw in arms.items():
        vals = [run_once(data, (0.05, 0.02, 0.08), args.missing_rate, s, {**det, **kw})
                ["RCPMOD"]["total"] for s in progress(seeds, desc=f"R7 {arm}")]  # fmt: skip
        out[arm] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "values": vals}
    for arm in out:
        out[arm]["delta"] = out[arm]["mean"] - out["full"]["mean"]
    return out


def _load(args):
    if args.dataset in OFFICIAL:
        return load_official(args.dataset, args.data)
    if args.data is not None:
        raise UserError(f"--data is for the official datasets; {args.dataset} is shipped")
    return load_shipped(args.dataset, seed=args.seed)


def _train(args, device) -> int:
    state = dist.init(device)
    data = _load(args)
    det = _detector_kwargs(args, state.device)
    if args.dataset in OFFICIAL and args.preset == "cpu256":
        det["preset"] = args.dataset  # the official recipe unless asked otherwise
    seeds = [args.seed + 1 + i for i in range(args.seeds)]
    perms = RATE_PERMUTATIONS[: args.perms]
    if dist.is_main():
        print(f"{data.describe()}; {len(perms)} permutations x {len(seeds)} seeds on "
              f"{dist.world_size()} process(es); preset {det['preset']}", flush=True)  # fmt: skip
    t = time.perf_counter()
    runs = run_grid(data, seeds, perms, args.missing_rate, det, (), components=True,
                    progress=progress, distributed=True)  # fmt: skip
    elapsed = time.perf_counter() - t
    summary = summarise(runs)
    if dist.is_main():
        print(_table(f"\n{data.name}: AUC over {len(runs)} runs (mean ± std)", summary))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "rcpmod_scores.tmp.npz"
        np.savez(tmp, scores=np.stack([r["_scores"] for r in runs]),
                 labels=np.stack([r["_labels"] for r in runs]),
                 types=np.stack([r["_types"].astype(str) for r in runs]),
                 rates=np.array([r["rates"] for r in runs]),
                 seeds=np.array([r["seed"] for r in runs]))  # fmt: skip
        tmp.replace(out / "rcpmod_scores.npz")
    path = write_result(args.out, package=PACKAGE, command="train", dataset=data.describe(),
                        metrics={"summary": summary, "runs": _strip(runs)},
                        timings={"total_seconds": elapsed},
                        config={**det, "seeds": seeds, "perms": [list(p) for p in perms],
                                "missing_rate": args.missing_rate, "dataset": args.dataset,
                                "data": str(args.data) if args.data else None},
                        device=state.device, seed=args.seed)  # fmt: skip
    if dist.is_main():
        print(f"wrote {path} and {Path(args.out) / 'rcpmod_scores.npz'}")
    dist.shutdown()
    return 0


def _evaluate(args, device) -> int:
    from rcpmod.baselines import BASELINES
    from rcpmod.protocol import auc_by_type, make_run_data

    state = dist.init(device)
    data = _load(args)
    scores_path = args.scores or Path(args.out) / "rcpmod_scores.npz"
    saved = None
    if args.scores is not None or scores_path.is_file():
        if not scores_path.is_file():
            raise FileNotFoundError(f"no such scores file: {scores_path}")
        try:
            with np.load(scores_path, allow_pickle=False) as f:
                saved = {k: f[k] for k in ("scores", "labels", "rates", "seeds")}
        except (OSError, ValueError, KeyError) as e:
            raise UserError(
                f"{scores_path}: not an rcpmod_scores.npz ({type(e).__name__})"
            ) from None
    seeds = [args.seed + 1 + i for i in range(args.seeds)]
    perms = RATE_PERMUTATIONS[: args.perms]
    backend = _backend(args.baselines_backend)
    runs = run_grid(data, seeds, perms, args.missing_rate, None, BASELINES, backend,
                    components=False, progress=progress, distributed=True)  # fmt: skip
    if saved is not None:
        for r in runs:
            hit = np.flatnonzero(
                (saved["seeds"] == r["seed"])
                & np.all(np.isclose(saved["rates"], r["rates"]), axis=1)
            )
            if len(hit) == 0:
                continue
            j = int(hit[0])
            if saved["scores"].shape[1] != data.n or not np.array_equal(saved["labels"][j],
                                                                         r["_labels"]):  # fmt: skip
                raise UserError(f"{scores_path}: scores do not belong to this dataset/protocol")
            inj = make_run_data(data, r["rates"], args.missing_rate, r["seed"])
            r["RCPMOD"] = auc_by_type(saved["scores"][j], inj)
    summary = summarise(runs)
    if dist.is_main():
        print(_table(f"{data.name}: AUC over {len(runs)} runs (mean ± std)", summary))
    path = write_result(args.out, package=PACKAGE, command="evaluate", dataset=data.describe(),
                        metrics={"summary": summary, "runs": _strip(runs)},
                        config={"seeds": seeds, "perms": [list(p) for p in perms],
                                "missing_rate": args.missing_rate, "backend": backend,
                                "scores": str(scores_path) if saved is not None else None},
                        device=state.device, seed=args.seed)  # fmt: skip
    if dist.is_main():
        print(f"wrote {path}")
    dist.shutdown()
    return 0


def _bench(args, device) -> int:
    from labcore.plot import line_plot
    from rcpmod.bench import run_bench

    t = time.perf_counter()
    r = run_bench(quick=args.quick, seed=args.seed, progress=lambda m: print(m, flush=True))
    elapsed = time.perf_counter() - t
    sc, nb, auc = r["score"], r["neighbors"], r["auc"]
    dense = [row for row in sc["rows"] if "dense_peak_bytes" in row]
    last = dense[-1]
    ratio = lambda a, b: a / b if b else float("inf")  # noqa: E731
    claims = [
        Claim("blockwise consistency score: peak tensor memory / the official dense 2n x 2n "
              f"score's at n={last['n']} ({last['blockwise_peak_bytes'] / 2**20:.1f} vs "
              f"{last['dense_peak_bytes'] / 2**20:.1f} MiB)", "peak_bytes_ratio",
              ratio(last["blockwise_peak_bytes"], last["dense_peak_bytes"]), None, "x",
              threshold=0.1, higher_is_better=False),
        Claim("blockwise score peak memory grows at most linearly in n (log-log slope; dense: 2)",
              "memory_slope", sc["blockwise_memory_loglog_slope"], None, "slope",
              threshold=1.2, higher_is_better=False),
        Claim("blockwise score equals the dense score (max abs difference)", "max_abs_diff",
              max(row["max_abs_difference"] for row in dense), None, "abs", threshold=1e-10,
              higher_is_better=False),
        Claim(f"neighbour lists + CRT at n={nb['n']}: ours / the official loop structure "
              f"({nb['ours_seconds']:.2f} vs {nb['official_style_seconds']:.2f} s)",
              "time_ratio", ratio(nb["ours_seconds"], nb["official_style_seconds"]), None, "x",
              threshold=0.5, higher_is_better=False),
        Claim(f"synthetic n={auc['n']}: RCPMOD class-outlier AUC / KNN's "
              f"({auc['RCPMOD']['class']:.3f} vs {auc['KNN']['class']:.3f})", "class_auc_ratio",
              ratio(auc["RCPMOD"]["class"], auc["KNN"]["class"]), None, "x", threshold=1.0),
        Claim(f"synthetic n={auc['n']}: RCPMOD total AUC (KNN {auc['KNN']['total']:.3f})",
              "total_auc", auc["RCPMOD"]["total"], None, "AUC", threshold=0.9),
    ]  # fmt: skip
    for c in claims:
        print(
            f"[{'met' if c.met else 'MISSED'}] {c.claim}: {c.value:.4g}"
            + (f" vs {c.baseline:.4g}" if c.baseline is not None else "")
        )
    out = Path(args.out)
    ns = [row["n"] for row in sc["rows"]]
    series_mem = {
        "blockwise": (ns, [row["blockwise_peak_bytes"] / 2**20 for row in sc["rows"]]),
        "dense (official)": (
            [row["n"] for row in dense],
            [row["dense_peak_bytes"] / 2**20 for row in dense],
        ),
    }
    series_t = {"blockwise": (ns, [row["blockwise_seconds"] for row in sc["rows"]]),
                "dense (official)": ([row["n"] for row in dense],
                                     [row["dense_seconds"] for row in dense])}  # fmt: skip
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        line_plot(
            out / "rcpmod_bench_score_memory.png",
            series_mem,
            xlabel="n samples",
            ylabel="peak tensor MiB",
            title="consistency score memory",
            loglog=True,
        )
        line_plot(
            out / "rcpmod_bench_score_time.png",
            series_t,
            xlabel="n samples",
            ylabel="seconds",
            title="consistency score time",
            loglog=True,
        )
    path = write_result(out, package=PACKAGE, command="bench",
                        dataset="random unit latents (score); synthetic multi-view (rest)",
                        metrics=r, memory={"score_rows": sc["rows"]},
                        timings={"total_seconds": elapsed}, config={"quick": args.quick,
                        "threads": torch.get_num_threads()}, device=device, seed=args.seed,
                        claims=claims)  # fmt: skip
    print(f"wrote {path} ({elapsed:.0f} s)")
    return 0


@error_boundary(PACKAGE)
def main(argv=None) -> int:
    """Entry point of the ``rcpmod`` console script."""
    args = parse_args(_parser(), argv)
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise UserError(str(e)) from None
    commands = {"demo": _demo, "train": _train, "evaluate": _evaluate, "bench": _bench}
    try:
        return commands[args.command](args, device)
    except ValueError as e:  # the detector's and the protocol's input checks: one line
        if isinstance(e, UserError):
            raise
        raise UserError(str(e)) from None


if __name__ == "__main__":
    sys.exit(main())
