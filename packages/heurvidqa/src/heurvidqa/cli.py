"""``heurvidqa demo | prepare-vocab | train-prompter | train | evaluate | bench``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields
from pathlib import Path

from heurvidqa.config import (
    HeuristicConfig,
    ModelConfig,
    TrainConfig,
    model_config,
    reconstructions,
)
from labcore.cli import (
    UserError,
    common_parser,
    error_boundary,
    nonnegative_int,
    parse_args,
    positive_float,
    positive_int,
)

PACKAGE = "heurvidqa"
FORMATS = ("msrvtt", "msvd", "nextqa")


def _add_dataclass(p: argparse.ArgumentParser, cls, title: str, prefix: str = "",
                   skip: tuple[str, ...] = (), defaults: dict | None = None) -> None:  # fmt: skip
    g = p.add_argument_group(title)
    defaults = defaults or {}
    for f in fields(cls):
        if f.name in skip or f.name == "betas":
            continue
        flag = "--" + prefix + f.name.replace("_", "-")
        default = defaults.get(f.name, f.default)
        help_ = f.metadata.get("help", f.name)
        dest = (prefix.replace("-", "_") + f.name) if prefix else f.name
        if f.type in ("bool", bool):
            g.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                           default=default, help=help_)  # fmt: skip
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            g.add_argument(flag, dest=dest, type=kind, default=default, help=help_)


def _from_args(cls, args, prefix: str = "", **extra):
    kw = {}
    for f in fields(cls):
        dest = (prefix.replace("-", "_") + f.name) if prefix else f.name
        if hasattr(args, dest):
            kw[f.name] = getattr(args, dest)
    kw.update(extra)
    return cls(**kw)


def _add_data(p: argparse.ArgumentParser, train: bool) -> None:
    g = p.add_argument_group("data (MSRVTT-QA / MSVD-QA jsonl, or NExT-QA csv)")
    g.add_argument("--format", choices=FORMATS, required=True, help="annotation format")
    if train:
        g.add_argument("--train-file", type=Path, required=True, help="training annotations")
    g.add_argument("--eval-file", type=Path, required=not train, default=None,
                   help="validation/test annotations")  # fmt: skip
    g.add_argument("--video-dir", type=Path, required=True,
                   help="video folder (NExT-QA: the root the VidOR paths are under)")  # fmt: skip
    g.add_argument("--ans2label", type=Path, default=None,
                   help="train_ans2label.json (open-ended formats)")  # fmt: skip
    g.add_argument("--video-map", type=Path, default=None, help="NExT-QA map_vid_vidorID.json")
    g.add_argument("--nextqa-mode", choices=["mc", "oe"], default="mc", help="NExT-QA format")
    g.add_argument("--ext", default=None, help="video extension (default .mp4; msvd .avi)")
    g.add_argument("--no-cache", action="store_true", help="decode on every access (large sets)")


def _parser() -> argparse.ArgumentParser:
    # one thread by default: small kernels on oversubscribed cores are several times slower
    common = common_parser(PACKAGE, threads=1)
    parser = argparse.ArgumentParser(
        prog=PACKAGE, description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str):
        return sub.add_parser(name, parents=[common], help=help_, description=help_,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip

    demo = add("demo", "T2, T3, T5 on MovingShapes-QA at the CPU size (ablation table)")
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="MovingShapes-QA root (default: <out>/movingshapes; written once)",
    )
    demo.add_argument("--seeds", type=positive_int, default=1, help="seeds seed, seed+1, ...")
    demo.add_argument("--formats", nargs="+", choices=["oe", "mc"], default=["oe", "mc"],
                      help="open-ended and/or multiple choice")  # fmt: skip
    demo.add_argument("--arms", nargs="+", choices=["plain", "+E", "+A", "+E+A"],
                      default=["plain", "+E", "+A", "+E+A"], help="ablation arms")  # fmt: skip
    demo.add_argument("--prompter-steps", type=positive_int, default=80, help="VTC steps each")
    demo.add_argument("--pretrain-steps", type=positive_int, default=60, help="VTC+MLM steps")
    demo.add_argument("--qa-steps", type=positive_int, default=80, help="fine-tuning steps/arm")
    demo.add_argument("--qa-batch", type=positive_int, default=16, help="open-ended batch")
    demo.add_argument("--mc-batch", type=positive_int, default=8,
                      help="multiple-choice batch (x5 candidate rows)")  # fmt: skip
    demo.add_argument("--eval-val", action="store_true", help="also evaluate on validation")
    demo.add_argument("--captions", type=positive_int, default=1200, help="caption clips")
    demo.add_argument("--train-qa", type=positive_int, default=400, help="training questions")
    demo.add_argument("--val-qa", type=positive_int, default=300, help="validation questions")
    demo.add_argument("--test-qa", type=positive_int, default=300, help="test questions")
    _add_dataclass(demo, HeuristicConfig, "heuristics ([R] = reconstruction)")

    pv = add("prepare-vocab", "mine the entity/action vocabularies from a training split")
    _add_data(pv, train=False)
    _add_dataclass(pv, HeuristicConfig, "vocabulary ([R] = reconstruction)")

    tp = add("train-prompter", "train a dual-encoder prompter with VTC on captions, then freeze")
    tp.add_argument("--captions", type=Path, required=True, help="{video_id, caption} jsonl")
    tp.add_argument("--video-dir", type=Path, required=True, help="caption video folder")
    tp.add_argument("--ext", default=".mp4", help="video extension")
    tp.add_argument("--size", choices=["cpu", "real"], default="cpu", help="model preset")
    tp.add_argument("--name", default="prompter", help="checkpoint name (entity, action, ...)")
    tp.add_argument("--text-model", default="minilm", help="frozen text tower (minilm or a path)")
    tp.add_argument("--num-frames", type=positive_int, default=None, help="override T")
    tp.add_argument("--text-pooling", choices=["mean", "cls"], default="mean",
                    help="[R] frozen text tower pooling")  # fmt: skip
    _add_dataclass(tp, TrainConfig, "optimisation", defaults={"batch_size": 32})

    tr = add("train", "fine-tune the student on VideoQA, with the heuristics if given")
    _add_data(tr, train=True)
    tr.add_argument("--size", choices=["cpu", "real"], default="cpu", help="model preset")
    tr.add_argument("--text-model", default=None,
                    help="override: minilm, bert-base, or a local path / hub id")  # fmt: skip
    tr.add_argument(
        "--init",
        type=Path,
        default=None,
        help="student weights: a heurvidqa checkpoint or an ALPRO .pt (keys mapped)",
    )
    tr.add_argument("--vocab", type=Path, default=None, help="vocab.json from prepare-vocab")
    tr.add_argument("--entity-prompter", type=Path, default=None, help="prompter checkpoint")
    tr.add_argument("--action-prompter", type=Path, default=None,
                    help="prompter checkpoint (default: the entity one, shared)")  # fmt: skip
    tr.add_argument("--use-entity", action="store_true", help="add λ_E L_E")
    tr.add_argument("--use-action", action="store_true", help="add λ_A L_A")
    tr.add_argument("--num-frames", type=positive_int, default=None, help="override T")
    tr.add_argument("--text-dropout", type=float, default=None, help="override BERT dropout")
    tr.add_argument("--eval-batch", type=positive_int, default=32, help="evaluation batch")
    _add_dataclass(tr, TrainConfig, "optimisation")
    _add_dataclass(tr, HeuristicConfig, "heuristics ([R] = reconstruction)",
                   skip=("entity_vocab_size", "action_vocab_size", "min_count",
                         "verb_particles", "adjective_bigrams"))  # fmt: skip

    ev = add("evaluate", "evaluate a fine-tuned student checkpoint")
    _add_data(ev, train=False)
    ev.add_argument("--checkpoint", type=Path, required=True, help="from heurvidqa train")
    ev.add_argument("--eval-batch", type=positive_int, default=32, help="evaluation batch")

    bench = add("bench", "decode throughput, real-size step time/memory, prompter overhead")
    bench.add_argument("--quick", action="store_true", help="CI size (< 90 s)")
    bench.add_argument("--batch", type=positive_int, default=1, help="real-size batch (1-2)")
    bench.add_argument("--steps", type=positive_int, default=2, help="timed steps per variant")
    bench.add_argument("--frames", type=positive_int, default=16, help="real-size frames")
    return parser


def _load_qa(args, split_file: Path, train: bool, ans2label=None):
    from heurvidqa.data import MsrvttQA, NextQA

    ext = args.ext or (".avi" if args.format == "msvd" else ".mp4")
    if args.format in ("msrvtt", "msvd"):
        a2l = ans2label if ans2label is not None else args.ans2label
        if a2l is None:
            raise UserError("--ans2label is required for msrvtt/msvd")
        return MsrvttQA(split_file, a2l, args.video_dir, ext=ext, train=train)
    if args.video_map is None:
        raise UserError("--video-map (map_vid_vidorID.json) is required for nextqa")
    a2l = ans2label if ans2label is not None else args.ans2label
    return NextQA(split_file, args.video_map, args.video_dir, mode=args.nextqa_mode, ext=ext,
                  ans2label=a2l, train=train)  # fmt: skip


def _device(args):
    from labcore import dist
    from labcore.runs import resolve_device

    state = dist.init(resolve_device(args.device))
    dist.check_precision(args.precision, state.device)
    return state.device


def _demo(args) -> int:
    from heurvidqa import synthetic as syn
    from heurvidqa.demo import print_table, run_demo, write_plot
    from labcore.runs import Timer, seed_everything, write_result

    device = _device(args)
    seed_everything(args.seed)
    hcfg = _from_args(HeuristicConfig, args)
    cfg = model_config("cpu")
    data_dir = args.data_dir or (args.out / "movingshapes")
    sizes = syn.SyntheticSizes(args.captions, args.train_qa, args.val_qa, args.test_qa)
    with Timer() as timer:
        res = run_demo(args.out, data_dir, [args.seed + i for i in range(args.seeds)],
                       args.formats, args.arms, cfg, hcfg,
                       TrainConfig(steps=args.prompter_steps, batch_size=32, lr=1e-4),
                       TrainConfig(steps=args.pretrain_steps, batch_size=16),
                       TrainConfig(steps=args.qa_steps, batch_size=args.qa_batch), device,
                       args.precision, sizes, mc_batch=args.mc_batch,
                       eval_val=args.eval_val)  # fmt: skip
    print_table(res)
    png = write_plot(res, args.out / "heurvidqa_demo.png")
    runs = res.pop("runs")
    path = write_result(args.out, package=PACKAGE, command="demo",
                        dataset="MovingShapes-QA (synthetic, spec §4.3)",
                        metrics={**res, "runs": runs}, timings={"total_seconds": timer.elapsed},
                        config={"model": asdict(cfg), "heuristics": asdict(hcfg),
                                "reconstructions": reconstructions(hcfg),
                                "prompter_steps": args.prompter_steps,
                                "pretrain_steps": args.pretrain_steps, "qa_steps": args.qa_steps,
                                "qa_batch": args.qa_batch, "mc_batch": args.mc_batch,
                                "seeds": args.seeds,
                                "sizes": asdict(sizes), "precision": args.precision},
                        device=device, seed=args.seed)  # fmt: skip
    print(f"wrote {path}" + (f" and {png}" if png else ""))
    return 0


def _prepare_vocab(args) -> int:
    from heurvidqa.vocab import mine_vocabularies

    hcfg = _from_args(HeuristicConfig, args)
    ds = _load_qa(args, args.eval_file, train=False)
    vocab = mine_vocabularies(ds.texts(), hcfg)
    if not vocab["entities"] or not vocab["actions"]:
        raise UserError(f"{args.eval_file}: no entity or no action reaches min_count "
                        f"{hcfg.min_count}")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "vocab.json"
    path.write_text(json.dumps({**vocab, "source": str(args.eval_file),
                                "reconstructions": reconstructions(hcfg)}, indent=1))  # fmt: skip
    print(f"{len(vocab['entities'])} entities, {len(vocab['actions'])} actions → {path}")
    return 0


def _train_prompter(args) -> int:
    import torch

    from heurvidqa.data import CaptionSet, FrameSource
    from heurvidqa.model import DualEncoder, load_tokenizer
    from heurvidqa.train import train_prompter
    from labcore import dist
    from labcore.runs import seed_everything, write_result

    device = _device(args)
    seed_everything(args.seed)
    over = {"num_frames": args.num_frames} if args.num_frames else {}
    cfg = model_config(args.size, **over)
    tcfg = _from_args(TrainConfig, args)
    caps = CaptionSet(args.captions, args.video_dir, args.ext)
    tok = load_tokenizer()
    p = DualEncoder(cfg, text_pooling=args.text_pooling, text_name=args.text_model)
    h = train_prompter(p, caps, FrameSource(cfg.image_size), tok, tcfg, device, seed=args.seed,
                       precision=args.precision, desc=args.name)  # fmt: skip
    if dist.is_main():
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save({"kind": "prompter", "model_config": asdict(cfg),
                    "text_pooling": args.text_pooling, "text_model": args.text_model,
                    "state_dict": p.state_dict()},
                   args.out / f"{args.name}.pt")  # fmt: skip
    write_result(args.out, package=PACKAGE, command=f"train-prompter-{args.name}",
                 dataset=str(args.captions),
                 metrics={"vtc_first": h.losses["vtc"][0], "vtc_last": h.tail_mean("vtc")},
                 config={"model": asdict(cfg), "train": asdict(tcfg)}, device=device,
                 seed=args.seed)  # fmt: skip
    dist.shutdown()
    return 0


def _load_prompter(path: Path, device):
    import torch

    from heurvidqa.model import DualEncoder

    if not path.is_file():
        raise FileNotFoundError(2, "prompter checkpoint not found", str(path))
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or ck.get("kind") != "prompter":
        raise UserError(f"{path}: not a heurvidqa prompter checkpoint")
    p = DualEncoder(ModelConfig(**ck["model_config"]), text_pooling=ck["text_pooling"],
                    text_name=ck.get("text_model", "minilm"))  # fmt: skip
    p.load_state_dict(ck["state_dict"])
    return p.requires_grad_(False).eval().to(device)


def _train(args) -> int:
    import torch

    from heurvidqa.data import FrameSource
    from heurvidqa.model import AlproStudent, load_tokenizer
    from heurvidqa.pipeline import make_heuristics, new_student
    from heurvidqa.train import evaluate_qa, finetune_qa
    from heurvidqa.weights import load_student_weights
    from labcore import dist
    from labcore.runs import seed_everything, write_result

    device = _device(args)
    seed_everything(args.seed)
    over = {k: v for k, v in (("text_model", args.text_model), ("num_frames", args.num_frames),
                              ("text_dropout", args.text_dropout)) if v is not None}  # fmt: skip
    cfg = model_config(args.size, **over)
    tcfg = _from_args(TrainConfig, args)
    hcfg = _from_args(HeuristicConfig, args)
    train_set = _load_qa(args, args.train_file, train=True)
    eval_set = _load_qa(args, args.eval_file, train=False, ans2label=getattr(
        train_set, "ans2label", None)) if args.eval_file else None  # fmt: skip
    vocab = {"entities": ["object"], "actions": ["move"]}
    heur = None
    if args.use_entity or args.use_action:
        if args.vocab is None or args.entity_prompter is None:
            raise UserError("--use-entity/--use-action need --vocab and --entity-prompter")
        if not args.vocab.is_file():
            raise FileNotFoundError(2, "vocabulary not found", str(args.vocab))
        vocab = json.loads(args.vocab.read_text())
    tok = load_tokenizer(cfg.text_model)
    if heur is None and (args.use_entity or args.use_action):
        ep = _load_prompter(args.entity_prompter, device)
        ap = _load_prompter(args.action_prompter, device) if args.action_prompter else None
        heur = make_heuristics(ep, ap, vocab, tok, hcfg, cfg)
    base = AlproStudent(cfg)
    if args.init is not None:
        load_student_weights(base, args.init)
    n_ans = len(getattr(train_set, "ans2label", {})) or 1
    student = new_student(base, n_ans, vocab, args.seed)
    src = FrameSource(cfg.image_size, cache=not args.no_cache)
    h = finetune_qa(student, train_set, src, tok, tcfg, device, heuristics=heur, hcfg=hcfg,
                    use_entity=args.use_entity, use_action=args.use_action, seed=args.seed,
                    precision=args.precision)  # fmt: skip
    metrics = {"final_losses": {k: h.tail_mean(k) for k in h.losses}}
    if eval_set is not None:
        metrics["eval"] = evaluate_qa(student, eval_set, src, tok, device, args.eval_batch,
                                      precision=args.precision)  # fmt: skip
    if dist.is_main():
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save({"kind": "student", "model_config": asdict(cfg), "vocab": vocab,
                    "ans2label": getattr(train_set, "ans2label", None),
                    "state_dict": dist.unwrap(student).state_dict()},
                   args.out / "student.pt")  # fmt: skip
    path = write_result(args.out, package=PACKAGE, command="train",
                        dataset=f"{args.format}:{args.train_file}", metrics=metrics,
                        config={"model": asdict(cfg), "train": asdict(tcfg),
                                "heuristics": asdict(hcfg), "reconstructions":
                                reconstructions(hcfg), "use_entity": args.use_entity,
                                "use_action": args.use_action, "precision": args.precision},
                        device=device, seed=args.seed)  # fmt: skip
    if dist.is_main():
        acc = metrics.get("eval", {}).get("accuracy")
        print(
            f"final QA loss {metrics['final_losses']['qa']:.4f}"
            + (f", eval accuracy {acc:.2f}" if acc is not None else "")
            + f"; wrote {path}"
        )
    dist.shutdown()
    return 0


def _evaluate(args) -> int:
    import torch

    from heurvidqa.data import FrameSource
    from heurvidqa.model import AlproStudent, load_tokenizer
    from heurvidqa.pipeline import new_student
    from heurvidqa.train import evaluate_qa
    from labcore import dist
    from labcore.runs import write_result

    device = _device(args)
    if not args.checkpoint.is_file():
        raise FileNotFoundError(2, "checkpoint not found", str(args.checkpoint))
    ck = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or ck.get("kind") != "student":
        raise UserError(f"{args.checkpoint}: not a heurvidqa student checkpoint")
    cfg = ModelConfig(**ck["model_config"])
    ds = _load_qa(args, args.eval_file, train=False, ans2label=ck.get("ans2label"))
    student = new_student(AlproStudent(cfg), len(ck.get("ans2label") or {}) or 1, ck["vocab"], 0)
    student.load_state_dict(ck["state_dict"])
    tok = load_tokenizer(cfg.text_model)
    rep = evaluate_qa(student, ds, FrameSource(cfg.image_size, cache=not args.no_cache), tok,
                      device, args.eval_batch, precision=args.precision)  # fmt: skip
    path = write_result(args.out, package=PACKAGE, command="evaluate",
                        dataset=f"{args.format}:{args.eval_file}", metrics=rep,
                        config={"checkpoint": str(args.checkpoint), "precision": args.precision},
                        device=device, seed=args.seed)  # fmt: skip
    if dist.is_main():
        print(f"accuracy {rep['accuracy']:.2f} over {rep['counts']['all'][1]} questions; "
              f"wrote {path}")  # fmt: skip
    dist.shutdown()
    return 0


def _bench(args) -> int:
    from heurvidqa.bench import run_bench

    return run_bench(args)


@error_boundary(PACKAGE)
def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``heurvidqa`` console script."""
    args = parse_args(_parser(), argv)
    return {
        "demo": _demo,
        "prepare-vocab": _prepare_vocab,
        "train-prompter": _train_prompter,
        "train": _train,
        "evaluate": _evaluate,
        "bench": _bench,
    }[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

_unused = (nonnegative_int, positive_float)
