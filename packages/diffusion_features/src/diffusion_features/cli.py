"""``diffusion_features catalogue | extract | train | evaluate | demo | bench``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

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
from labcore.runs import Claim, Timer, resolve_device, seed_everything, write_result

PACKAGE = "diffusion_features"
# pre-registered bench targets (issue 14): capture overhead for <= 16 activations, early stop
TARGET_OVERHEAD, TARGET_EARLY = 0.05, 0.5
MODEL_HELP = "tiny-sd15 | tiny-sdxl | tiny-pixart | tiny-flux | a local diffusers folder | hub id"


def _add_model(p: argparse.ArgumentParser, ids: bool = True) -> None:
    g = p.add_argument_group("model and features")
    g.add_argument("--model", default="tiny-sd15", help=MODEL_HELP)
    g.add_argument(
        "--img-size",
        type=positive_int,
        default=None,
        help="square input size (default: the family's, 512 SD1.5, 1024 SDXL)",
    )
    if ids:
        g.add_argument(
            "--ids",
            nargs="+",
            default=None,
            help="activation IDs (see `catalogue`), or use --preset",
        )
        g.add_argument(
            "--preset", default=None, help="ours-v1.5 | ours-xl | legacy-v1.5 | legacy-xl"
        )
    g.add_argument(
        "--t",
        type=nonnegative_int,
        default=50,
        help="img2img strength x 1000 (the scheduler maps it: 51 for PNDM)",
    )
    g.add_argument(
        "--prompt",
        default=None,
        help="prompt (needs a text encoder; tiny models use fixed random embeddings)",
    )
    g.add_argument(
        "--ensemble",
        type=positive_int,
        default=1,
        help="noise draws averaged (DIFT-style; the paper uses 1)",
    )
    g.add_argument("--batch-size", type=positive_int, default=4, help="images per forward")


def _parser() -> argparse.ArgumentParser:
    # one thread by default: on a shared 2-core box, OpenMP spinning makes more threads slower
    common = common_parser(PACKAGE, threads=1)
    parser = argparse.ArgumentParser(prog=PACKAGE, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cat = sub.add_parser("catalogue", parents=[common], help="list the activation IDs of a model")
    cat.add_argument("--model", default="tiny-sd15", help=MODEL_HELP)
    cat.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cat.add_argument("--cross-kv", action="store_true", help="include text-only cross-k/v")
    cat.add_argument("--filter", action="store_true", help="apply the qualitative filter")
    cat.add_argument(
        "--latent",
        type=positive_int,
        default=None,
        help="latent side for the side column (default: the model's sample size)",
    )
    ex = sub.add_parser("extract", parents=[common], help="features of an image folder")
    _add_model(ex)
    ex.add_argument("--images", type=Path, required=True, help="folder of images")
    ex.add_argument(
        "--format",
        choices=["safetensors", "npy"],
        default="safetensors",
        help="safetensors: one file per image with every ID; npy: merged channels",
    )
    ex.add_argument(
        "--merge-size",
        type=positive_int,
        default=None,
        help="npy: resize every activation to this side (default: the largest)",
    )
    tr = sub.add_parser(
        "train", parents=[common], help="label-scarce segmentation (DDPM-seg protocol) on a folder"
    )
    _add_model(tr)
    tr.add_argument("--data", type=Path, required=True, help="DDPM-seg layout: images + .npy")
    tr.add_argument(
        "--features",
        type=Path,
        default=None,
        help="a folder written by `extract` (else extract on the fly)",
    )
    tr.add_argument("--num-classes", type=positive_int, required=True, help="label classes")
    tr.add_argument("--n-train", type=positive_int, required=True, help="training images")
    tr.add_argument("--runs", type=positive_int, default=5, help="re-shuffled runs")
    tr.add_argument(
        "--head",
        choices=["mlp-ensemble", "linear"],
        default="mlp-ensemble",
        help="the DDPM-seg 10-MLP ensemble or a linear probe",
    )
    tr.add_argument(
        "--label-size",
        type=positive_int,
        default=256,
        help="labels and features are resized to this side (protocol: 256)",
    )
    tr.add_argument("--n-models", type=positive_int, default=10, help="MLPs in the ensemble")
    tr.add_argument("--max-epochs", type=positive_int, default=100, help="MLP epochs at most")
    ev = sub.add_parser(
        "evaluate",
        parents=[common],
        help="correspondence PCK on SPair-71k with the nearest-neighbour head",
    )
    _add_model(ev)
    ev.add_argument("--spair", type=Path, required=True, help="SPair-71k root")
    ev.add_argument("--split", default="test", help="PairAnnotation split (test, val, trn)")
    ev.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="seeded subset of pairs (360 for a val-360-sized run)",
    )
    ev.add_argument("--alpha", type=unit_interval, default=0.1, help="PCK threshold")
    ev.add_argument(
        "--feature-side",
        type=positive_int,
        default=128,
        help="features are bilinearly resized to this side and concatenated",
    )
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="T9 + T11 on synthetic scenes, tiny random-init SD1.5 topology",
    )
    demo.add_argument("--n-train", type=positive_int, default=16, help="training images")
    demo.add_argument("--n-test", type=positive_int, default=16, help="test images")
    demo.add_argument("--pixels", type=positive_int, default=20000, help="probe pixels")
    demo.add_argument("--ensemble", type=positive_int, default=4, help="noise draws (A3)")
    demo.add_argument("--no-vae", action="store_true", help="skip the random-init VAE rows")
    bench = sub.add_parser(
        "bench", parents=[common], help="capture time/memory vs a plain forward, early stop"
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="narrow widths (32..128), 16² latent (CI); else full SD1.5 size",
    )
    bench.add_argument(
        "--repeats",
        type=positive_int,
        default=None,
        help="timed repeats per variant (default 3 quick, 5 full)",
    )
    return parser


def _ids(args, model) -> list[str]:
    from diffusion_features.selections import PRESETS

    if args.preset and args.ids:
        raise UserError("give --ids or --preset, not both")
    if args.preset:
        if args.preset not in PRESETS:
            raise UserError(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
        return list(PRESETS[args.preset])
    if not args.ids:
        raise UserError("give --ids ID [ID ...] or --preset NAME")
    return list(args.ids)


def _extractor(args, device):
    from diffusion_features.extract import Extractor
    from diffusion_features.models import load_backbone

    bb = load_backbone(
        args.model,
        seed=args.seed,
        img_size=args.img_size,
        local_files_only=os.environ.get("HF_HUB_OFFLINE", "1") != "0",
    )
    bb.to(device)
    ex = Extractor(bb, _ids(args, bb.model), device=device, precision=args.precision)
    return bb, ex


def _embeddings(args, bb, ex):
    from diffusion_features.extract import default_prompt_embeds

    if args.prompt is not None:
        return ex.encode_prompt(args.prompt)
    if bb.text_encoder is not None:
        raise UserError("this model has a text encoder: give --prompt (the dataset's prompt)")
    if not bb.name.startswith("tiny-"):
        raise UserError(f"{bb.name} has no text encoder: cannot encode a prompt")
    return default_prompt_embeds(bb)


def _catalogue(args) -> int:
    from diffusion_features.catalogue import catalogue, catalogue_table
    from diffusion_features.models import load_backbone
    from diffusion_features.properties import qualitative_filter

    bb = load_backbone(args.model, seed=args.seed)
    acts = catalogue(bb.model, cross_kv=args.cross_kv)
    if args.filter:
        acts = qualitative_filter(acts)
    if args.json:
        print(json.dumps([a.as_dict() for a in acts], indent=1))
    else:
        side = args.latent or int(bb.model.config.sample_size)
        print(catalogue_table(acts, side))
        print(f"{len(acts)} activations ({type(bb.model).__name__}, {bb.name})")
    return 0


def _atomic_save(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".part")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _extract(args, device) -> int:
    import numpy as np

    from diffusion_features.data import list_images, load_image
    from diffusion_features.extract import merge
    from labcore import dist

    files = list_images(args.images)
    bb, ex = _extractor(args, device)
    emb, pooled = _embeddings(args, bb, ex)
    suffix = ".safetensors" if args.format == "safetensors" else ".npy"
    todo = [f for f in files if not (args.out / (f.stem + suffix)).exists()]
    mine = [todo[i] for i in dist.shard(len(todo)).tolist()]
    for f in mine:  # decode everything first: a bad file fails before anything is written
        load_image(f)
    args.out.mkdir(parents=True, exist_ok=True)
    with Timer() as timer:
        for i in progress(range(0, len(mine), args.batch_size), desc="extract"):
            chunk = mine[i : i + args.batch_size]
            seeds = [args.seed * 1_000_003 + files.index(f) for f in chunk]
            feats = ex.extract(
                [load_image(f) for f in chunk],
                emb,
                t=args.t,
                seed=seeds,
                n_ensemble=args.ensemble,
                pooled_prompt_embeds=pooled,
            )
            for j, f in enumerate(chunk):
                one = {k: v[j].contiguous() for k, v in feats.items()}
                path = args.out / (f.stem + suffix)
                if args.format == "safetensors":
                    from safetensors.torch import save_file

                    _atomic_save(
                        path,
                        lambda p, one=one: save_file(
                            one, str(p), metadata={"t": str(args.t), "model": str(args.model)}
                        ),
                    )
                else:
                    arr = merge({k: v[None] for k, v in one.items()}, args.merge_size)[0]

                    def write(p, arr=arr):
                        with open(p, "wb") as fh:
                            np.save(fh, arr.numpy())

                    _atomic_save(path, write)
    dist.barrier()
    print(
        f"{len(mine)} written, {len(files) - len(todo)} already there -> {args.out} "
        f"({timer.elapsed:.1f} s)"
    )
    return 0


def _load_features(folder: Path, files: list[Path], ids: list[str]) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    out: dict[str, list[torch.Tensor]] = {k: [] for k in ids}
    for f in files:
        path = folder / (f.stem + ".safetensors")
        if not path.is_file():
            raise UserError(f"no feature file {path} for image {f} (run `extract` first)")
        try:
            d = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise UserError(f"cannot read feature file {path}: {e}") from None
        missing = [k for k in ids if k not in d]
        if missing:
            raise UserError(f"feature file {path} lacks {', '.join(missing)}")
        for k in ids:
            out[k].append(d[k].float())
    return {k: torch.stack(v) for k, v in out.items()}


def _features_for(args, device, images, files):
    """{id: (N, C, h, w)} from --features or extracted on the fly (sharded over ranks)."""
    from labcore import dist

    if args.features is not None:
        from diffusion_features.models import load_backbone

        bb = load_backbone(args.model, seed=args.seed)
        return _load_features(args.features, files, _ids(args, bb.model))
    bb, ex = _extractor(args, device)
    emb, pooled = _embeddings(args, bb, ex)
    idx = dist.shard(images.shape[0])
    parts: dict[str, list[torch.Tensor]] = {}
    for s in progress(range(0, len(idx), args.batch_size), desc="extract"):
        sel = idx[s : s + args.batch_size]
        seeds = [args.seed * 1_000_003 + int(j) for j in sel]  # per image: shard-invariant
        f = ex.extract(
            images[sel],
            emb,
            t=args.t,
            seed=seeds,
            n_ensemble=args.ensemble,
            pooled_prompt_embeds=pooled,
        )
        for k, v in f.items():
            parts.setdefault(k, []).append(v.float())
    feats = {k: torch.cat(v) for k, v in parts.items()}
    if dist.world_size() > 1:  # gather in image order (the shard is strided)
        order = dist.all_gather_cat(idx.to(torch.float64)).long()
        feats = {k: dist.all_gather_cat(v)[order.argsort()] for k, v in feats.items()}
    return feats


def _train(args, device) -> int:
    from diffusion_features.data import load_ddpm_seg
    from diffusion_features.extract import merge
    from diffusion_features.heads import LinearProbe, MLPEnsemble, label_scarce_protocol
    from labcore import dist

    dist.init(device)
    images, labels, files = load_ddpm_seg(args.data, size=args.label_size)
    if args.n_train >= images.shape[0]:
        raise UserError(f"--n-train {args.n_train} leaves no test image of {images.shape[0]}")
    with Timer() as timer:
        feats = _features_for(args, device, images, files)
        x = merge(feats, args.label_size, "nearest")

        def make_head(run):
            if args.head == "linear":
                return _LinearHead(LinearProbe(seed=args.seed + run), args.num_classes)
            return _MLPHead(
                MLPEnsemble(
                    args.num_classes,
                    n_models=args.n_models,
                    max_epochs=args.max_epochs,
                    seed=args.seed + run,
                ),
                device,
            )

        res = label_scarce_protocol(
            x, labels, args.n_train, make_head, runs=args.runs, seed=args.seed
        )
    print(
        f"mIoU {100 * res['miou_mean']:.1f} ± {100 * res['miou_std']:.1f} over {args.runs} "
        f"re-shuffled runs ({args.head}, {x.shape[1]} channels)"
    )
    path = write_result(
        args.out,
        package=PACKAGE,
        command="train",
        dataset=str(args.data),
        metrics=res,
        timings={"total_seconds": timer.elapsed},
        config={k: str(v) for k, v in vars(args).items()},
        device=device,
        seed=args.seed,
    )
    print(f"wrote {path}")
    return 0


class _MLPHead:
    def __init__(self, ens, device):
        self.ens, self.device = ens, device

    def fit(self, x, y):
        self.ens.fit(x, y, device=self.device)
        return self

    def miou(self, x, y):
        return self.ens.miou(x, y, device=self.device)


class _LinearHead:
    def __init__(self, probe, k):
        self.probe, self.k = probe, k

    def fit(self, x, y):
        self.probe.fit(x, y)
        return self

    def miou(self, x, y):
        return self.probe.miou(x, y, self.k)


def _evaluate(args, device) -> int:
    from diffusion_features.data import load_image, load_spair_pairs
    from diffusion_features.extract import merge
    from diffusion_features.heads import nn_correspondence
    from labcore import dist

    dist.init(device)
    pairs = load_spair_pairs(args.spair, args.split, limit=args.limit, seed=args.seed)
    bb, ex = _extractor(args, device)
    emb, pooled = _embeddings(args, bb, ex)
    hits = {"img_hits": 0.0, "bbox_hits": 0.0, "kps": 0.0}
    mine = dist.shard(len(pairs)).tolist()
    with Timer() as timer:
        for i in progress(mine, desc="pairs"):
            p = pairs[i]
            src, trg = load_image(p["src"]), load_image(p["trg"])
            f = ex.extract(
                [src, trg],
                emb,
                t=args.t,
                seed=args.seed + i,
                n_ensemble=args.ensemble,
                pooled_prompt_embeds=pooled,
            )
            m = merge(f, args.feature_side, "bilinear").float()
            pred = nn_correspondence(
                m[0], m[1], p["src_kps"], (src.height, src.width), (trg.height, trg.width)
            )
            d = (pred - p["trg_kps"]).norm(dim=1)
            bbox = p["trg_bbox"]
            hits["img_hits"] += float((d <= args.alpha * max(trg.height, trg.width)).sum())
            side = float(max(bbox[2] - bbox[0], bbox[3] - bbox[1]))
            hits["bbox_hits"] += float((d <= args.alpha * side).sum())
            hits["kps"] += len(d)
    tot = dist.all_reduce_dict(hits)
    metrics = {
        f"pck_img@{args.alpha}": tot["img_hits"] / max(tot["kps"], 1),
        f"pck_bbox@{args.alpha}": tot["bbox_hits"] / max(tot["kps"], 1),
        "pairs": len(pairs),
        "keypoints": int(tot["kps"]),
    }
    print(json.dumps(metrics))
    path = write_result(
        args.out,
        package=PACKAGE,
        command="evaluate",
        dataset=str(args.spair),
        metrics=metrics,
        timings={"total_seconds": timer.elapsed},
        config={k: str(v) for k, v in vars(args).items()},
        device=device,
        seed=args.seed,
    )
    print(f"wrote {path}")
    return 0


def _demo(args, device) -> int:
    from diffusion_features.demo import run_demo
    from labcore.plot import bar_plot

    with Timer() as timer:
        res = run_demo(
            n_train=args.n_train,
            n_test=args.n_test,
            seed=args.seed,
            n_pixels=args.pixels,
            ensemble=args.ensemble,
            with_vae=not args.no_vae,
        )
    print(
        "synthetic shapes (64², 3 classes), tiny random-init SD1.5-topology U-Net — "
        "checks the machinery, NOT the paper's result"
    )
    print(f"all-background mIoU (chance): {res['chance_all_background']:.3f}")
    print(f"{'run':44s} {'activation':42s} mIoU")
    for run, row in res["miou"].items():
        for k, v in row.items():
            print(f"{run:44s} {k:42s} {v:.3f}")
    for name, c in res["checks"].items():
        print(f"[{'met' if c['met'] else 'MISSED'}] {name}")
    args.out.mkdir(parents=True, exist_ok=True)
    bars = {
        f"{k.replace('-vit-block0', '')} ({run})": (v, 0.0)
        for run, row in res["miou"].items()
        for k, v in row.items()
    }
    bar_plot(
        args.out / "diffusion_features_demo.png",
        bars,
        ylabel="test mIoU (linear probe)",
        title="tiny random-init SD1.5 topology, synthetic shapes (not the paper)",
    )
    path = write_result(
        args.out,
        package=PACKAGE,
        command="demo",
        dataset="synthetic shapes 64² (spec §4), random-init tiny SD1.5",
        metrics=res,
        timings={"total_seconds": timer.elapsed},
        config={
            "n_train": args.n_train,
            "n_test": args.n_test,
            "pixels": args.pixels,
            "ensemble": args.ensemble,
            "threads": args.threads,
        },
        device=device,
        seed=args.seed,
    )
    print(f"wrote {path} ({timer.elapsed:.0f} s)")
    return 0


def _bench(args, device) -> int:
    from diffusion_features.bench import EARLY_ID, run_bench
    from labcore.plot import bar_plot

    with Timer() as timer:
        r = run_bench(
            quick=args.quick,
            device=device,
            seed=args.seed,
            repeats=args.repeats,
            precision=args.precision,
        )
    med, size = r["median_seconds"], "quick widths" if args.quick else "full SD1.5 size"
    for k, v in med.items():
        over = r["overhead_vs_plain"].get(k)
        extra = f"  ({100 * over:+.1f} % vs plain)" if over is not None else ""
        print(
            f"{k:20s} {v * 1000:9.1f} ms  peak {r['peak_tensor_bytes'][k] / 2**20:8.1f} MiB{extra}"
        )
    worst16 = max(r["overhead_vs_plain"]["capture_1"], r["overhead_vs_plain"]["capture_16"])
    claims = [
        Claim(
            f"capture overhead for <= 16 activations ({size})",
            "max overhead vs plain",
            worst16,
            None,
            "fraction",
            threshold=TARGET_OVERHEAD,
            higher_is_better=False,
        ),
        Claim(
            f"early stop at {EARLY_ID} vs a full forward ({size})",
            "time ratio",
            r["early_stop_vs_plain"],
            None,
            "fraction",
            threshold=TARGET_EARLY,
            higher_is_better=False,
        ),
    ]
    for c in claims:
        print(
            f"[{'met' if c.met else 'MISSED'}] {c.claim}: {c.value:.3f} (target <= {c.threshold})"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    bar_plot(
        args.out / "diffusion_features_bench.png",
        {k: (v * 1000, 0.0) for k, v in med.items()},
        ylabel="median ms per forward",
        title=f"capture cost, SD1.5 topology ({size}), batch 1",
    )
    path = write_result(
        args.out,
        package=PACKAGE,
        command="bench",
        dataset=f"random-init SD1.5-topology U-Net ({size})",
        metrics=r,
        memory=r["peak_tensor_bytes"],
        timings={"total_seconds": timer.elapsed},
        config=r["config"],
        device=device,
        seed=args.seed,
        claims=claims,
    )
    print(f"wrote {path}")
    return 0


@error_boundary(PACKAGE)
def main(argv=None) -> int:
    args = parse_args(_parser(), argv)
    if args.command == "catalogue":
        return _catalogue(args)
    device = resolve_device(args.device)
    seed_everything(args.seed)
    return {
        "extract": _extract,
        "train": _train,
        "evaluate": _evaluate,
        "demo": _demo,
        "bench": _bench,
    }[args.command](args, device)


if __name__ == "__main__":
    sys.exit(main())
