"""``heurvidqa demo``: acceptance tests T2, T3, T5 on MovingShapes-QA at the CPU size (spec §4.5).

Stages: write the data set (once) → read it back through the MSRVTT-QA / NExT-QA loaders → mine
𝓔, 𝓐 from the training split (T2) → train the two prompters with VTC and freeze them (T3) →
pretrain the student with VTC + MLM on the captions (every arm starts from this one checkpoint,
pitfall 8) → fine-tune plain / +E / +A / +E+A in the open-ended and multiple-choice formats over
the seeds (T5) → table, JSON, PNG.

Thresholds are fixed here, before any run; a miss is reported, never retuned.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from heurvidqa import synthetic as syn
from heurvidqa.config import HeuristicConfig, ModelConfig, TrainConfig, reconstructions
from heurvidqa.data import FrameSource
from heurvidqa.model import AlproStudent, load_tokenizer
from heurvidqa.pipeline import (
    ARMS,
    load_movingshapes,
    make_heuristics,
    mine_train_vocab,
    prompter_zero_shot,
    run_arm,
    train_prompters,
)
from heurvidqa.train import pretrain_student

# pre-registered thresholds (spec §4.5)
T3_ACTION, T3_ENTITY = 0.85, 0.75
T5_GAIN_OE, T5_GAIN_MC, T5_TEMPORAL = 5.0, 3.0, 3.0
TEMPORAL_TYPES = {"oe": ("how",), "mc": ("TN", "TP")}


def check_vocab(vocab: dict, data) -> dict:
    """T2: actions exactly the 6 motions; entities ⊇ the shapes and the colour-shape bigrams with
    train frequency ≥ 5; no word that appears only outside the training split."""
    from heurvidqa.vocab import count_terms

    want_actions = {f"move {d}" for d in syn.DIRECTIONS} | {"grow", "shrink"}
    train_nouns, _ = count_terms(data.oe["train"].texts() + data.mc["train"].texts(),
                                 HeuristicConfig())  # fmt: skip
    bigrams = {t for t, c in train_nouns.items() if " " in t and t.split()[0] in syn.COLOURS
               and t.split()[1] in syn.SHAPES and c >= 5}  # fmt: skip
    train_words = {w for t in data.oe["train"].texts() + data.mc["train"].texts()
                   for w in t.lower().replace("?", " ").split()}  # fmt: skip
    leaked = [t for t in vocab["entities"] + vocab["actions"]
              if not set(t.split()) <= train_words | {"move"}]  # fmt: skip
    ents = set(vocab["entities"])
    return {"actions_exact": set(vocab["actions"]) == want_actions,
            "shapes_in": set(syn.SHAPES) <= ents, "bigrams_in": bigrams <= ents,
            "n_bigrams_ge5": len(bigrams), "leaked_terms": leaked,
            "met": set(vocab["actions"]) == want_actions and set(syn.SHAPES) <= ents
            and bigrams <= ents and not leaked}  # fmt: skip


def _mean_std(xs: list[float]) -> tuple[float, float]:
    a = np.array(xs, float)
    return float(a.mean()), float(a.std(ddof=0))


def _temporal(report: dict, fmt: str) -> float:
    hits = sum(report["counts"].get(t, [0, 0])[0] for t in TEMPORAL_TYPES[fmt])
    n = sum(report["counts"].get(t, [0, 0])[1] for t in TEMPORAL_TYPES[fmt])
    return 100.0 * hits / n if n else float("nan")


def run_demo(out: Path, data_dir: Path, seeds: list[int], formats: list[str], arms: list[str],
             cfg: ModelConfig, hcfg: HeuristicConfig, prompter_tc: TrainConfig,
             pretrain_tc: TrainConfig, qa_tc: TrainConfig, device, precision: str = "fp32",
             sizes: syn.SyntheticSizes | None = None, log=None, mc_batch: int = 8,
             eval_val: bool = False) -> dict:  # fmt: skip
    from dataclasses import replace

    log = log or (lambda *a: print(*a, flush=True))
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if not (data_dir / "DONE").is_file():
        syn.generate(data_dir, sizes, seed=0)
    timings["data_seconds"] = time.perf_counter() - t0
    data = load_movingshapes(data_dir)
    tok = load_tokenizer(cfg.text_model)
    source = FrameSource(cfg.image_size, cache=True)
    vocab = mine_train_vocab(data, hcfg)
    t2 = check_vocab(vocab, data)
    log(f"T2 vocabularies: {len(vocab['entities'])} entities, actions {vocab['actions']} "
        f"[{'met' if t2['met'] else 'MISSED'}]")  # fmt: skip
    t = time.perf_counter()
    seed0 = seeds[0]
    (ep, eh), (ap, ah) = train_prompters(cfg, hcfg, data.captions, source, tok, prompter_tc,
                                         device, seed=seed0, precision=precision)  # fmt: skip
    heur = make_heuristics(ep, ap, vocab, tok, hcfg, cfg).to(device)
    timings["prompter_seconds"] = time.perf_counter() - t
    t3 = prompter_zero_shot(heur, vocab, cfg)
    t3["met_action"] = t3["action_top1"] >= T3_ACTION
    t3["met_entity"] = t3["entity_top1"] >= T3_ENTITY
    log(f"T3 prompters: action top-1 {t3['action_top1']:.3f} (>= {T3_ACTION}, chance "
        f"{t3['action_chance']:.3f}) [{'met' if t3['met_action'] else 'MISSED'}]; entity top-1 "
        f"{t3['entity_top1']:.3f} (>= {T3_ENTITY}, chance {t3['entity_chance']:.3f}) "
        f"[{'met' if t3['met_entity'] else 'MISSED'}]")  # fmt: skip
    t = time.perf_counter()
    torch.manual_seed(seed0)
    student = AlproStudent(cfg)
    ph = pretrain_student(student, data.captions, source, tok, pretrain_tc, device, seed=seed0,
                          precision=precision)  # fmt: skip
    timings["pretrain_seconds"] = time.perf_counter() - t
    log(f"student pretraining: VTC {ph.losses['vtc'][0]:.3f} → {ph.tail_mean('vtc'):.3f}, "
        f"MLM {ph.losses['mlm'][0]:.3f} → {ph.tail_mean('mlm'):.3f}")  # fmt: skip
    results: dict = {f: {a: [] for a in arms} for f in formats}
    t = time.perf_counter()
    for fmt in formats:
        for seed in seeds:
            for arm in arms:
                tc = qa_tc if fmt == "oe" else replace(qa_tc, batch_size=mc_batch)
                r = run_arm(arm, fmt, student, data, heur, vocab, source, tok, tc, hcfg,
                            device, seed, precision, eval_val=eval_val)  # fmt: skip
                results[fmt][arm].append(r)
                log(
                    f"  {fmt} {arm:5s} seed {seed}: test {r['test']['accuracy']:.1f} "
                    f"(temporal {_temporal(r['test'], fmt):.1f})"
                    + (f", val {r['val']['accuracy']:.1f}" if r["val"] else "")
                )
    timings["finetune_seconds"] = time.perf_counter() - t
    table: dict = {}
    checks: dict = {}
    for fmt in formats:
        table[fmt] = {}
        for arm in arms:
            accs = [r["test"]["accuracy"] for r in results[fmt][arm]]
            temp = [_temporal(r["test"], fmt) for r in results[fmt][arm]]
            m, s = _mean_std(accs)
            tm, ts = _mean_std(temp)
            table[fmt][arm] = {"test_mean": m, "test_std": s, "temporal_mean": tm,
                               "temporal_std": ts, "per_seed": accs}  # fmt: skip
        if "plain" in arms and "+E+A" in arms:
            gain = table[fmt]["+E+A"]["test_mean"] - table[fmt]["plain"]["test_mean"]
            thr = T5_GAIN_OE if fmt == "oe" else T5_GAIN_MC
            checks[f"T5 {fmt}: +E+A - plain >= {thr}"] = {"value": gain, "threshold": thr,
                                                          "met": gain >= thr}  # fmt: skip
        if "+E" in arms and "+E+A" in arms:
            g = table[fmt]["+E+A"]["temporal_mean"] - table[fmt]["+E"]["temporal_mean"]
            checks[f"T5 {fmt} temporal: +E+A - +E >= {T5_TEMPORAL}"] = {
                "value": g, "threshold": T5_TEMPORAL, "met": g >= T5_TEMPORAL}  # fmt: skip
    timings["total_seconds"] = time.perf_counter() - t0
    return {"vocab": {"entities": vocab["entities"], "actions": vocab["actions"]}, "T2": t2,
            "T3": t3, "table": table, "T5": checks, "runs": results, "timings": timings,
            "prompter_loss": {"entity": [eh.losses["vtc"][0], eh.tail_mean("vtc")],
                              "action": ([ah.losses["vtc"][0], ah.tail_mean("vtc")]
                                         if ah is not None else None)},
            "pretrain_loss": {k: [v[0], ph.tail_mean(k)] for k, v in ph.losses.items()},
            "reconstructions": reconstructions(hcfg)}  # fmt: skip


def print_table(res: dict, log=print) -> None:
    for fmt, rows in res["table"].items():
        log(f"\n{fmt.upper()} test accuracy (%), mean ± std over seeds")
        log(f"{'arm':6s} {'overall':>14s} {'temporal':>14s}")
        for arm, r in rows.items():
            log(
                f"{arm:6s} {r['test_mean']:8.1f} ± {r['test_std']:4.1f} "
                f"{r['temporal_mean']:8.1f} ± {r['temporal_std']:4.1f}"
            )
    for name, c in res["T5"].items():
        log(f"[{'met' if c['met'] else 'MISSED'}] {name}: {c['value']:+.1f}")


def write_plot(res: dict, path: Path) -> Path | None:
    from labcore.plot import bar_plot

    values = {f"{fmt} {arm}": (r["test_mean"], r["test_std"])
              for fmt, rows in res["table"].items() for arm, r in rows.items()}  # fmt: skip
    return bar_plot(
        path,
        values=values,
        ylabel="test accuracy (%)",
        title="HeurVidQA ablation on MovingShapes-QA (CPU size)",
    )


def dump(res: dict, path: Path) -> None:
    path.write_text(json.dumps(res, indent=1, default=str))


__all__ = ["ARMS", "check_vocab", "print_table", "run_demo", "write_plot"]
