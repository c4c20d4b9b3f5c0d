"""Training loops: prompters (VTC), student pretraining (VTC + MLM), QA fine-tuning (L_QA + λ_E L_E
+ λ_A L_A), and evaluation. All run under ``labcore.dist`` (torchrun) and ``--precision``.

Determinism across world sizes: every rank draws the same *global* batch (example indices, crop
boxes, windows) from generators seeded by ``(seed, step)``; each example's frame indices come from
its own ``(seed, step, position)`` generator; a rank takes positions ``rank, rank + world, ...``.
So a 2-process run sees exactly the single-process batch, split in two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from heurvidqa.config import HeuristicConfig, TrainConfig
from heurvidqa.data import NEXT_GROUPS, FrameSource, caption_batch, mask_tokens, qa_batch
from heurvidqa.heuristics import Heuristics, sample_crop_boxes, sample_windows, soft_cross_entropy
from heurvidqa.model import AlproStudent, DualEncoder, _gather_with_grad, vtc_loss
from labcore import dist
from labcore.cli import progress

__all__ = ["accuracy_report", "evaluate_qa", "finetune_qa", "pretrain_student", "train_prompter"]


def _optimizer(model: torch.nn.Module, tcfg: TrainConfig, text_prefixes: tuple[str, ...]):
    text, new = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (text if name.startswith(text_prefixes) else new).append(p)
    groups = [{"params": new, "lr": tcfg.lr}]
    if text:
        groups.append({"params": text, "lr": tcfg.lr_text})
    opt = torch.optim.AdamW(groups, betas=tcfg.betas, weight_decay=tcfg.weight_decay)
    warm = max(1, int(tcfg.warmup * tcfg.steps))

    def schedule(step: int) -> float:  # linear warm-up then linear decay (ALPRO)
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (tcfg.steps - step) / max(1, tcfg.steps - warm))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


class _BatchPlan:
    """Global batches of example indices, epoch-wise without replacement; with ``groups`` one
    random member per group (ALPRO's ``max_n_example_per_group=1``)."""

    def __init__(self, n: int, batch: int, seed: int, groups: list[list[int]] | None = None):
        self.groups = groups or [[i] for i in range(n)]
        self.batch, self.rng = batch, np.random.default_rng([seed, 7])
        self.queue: list[int] = []

    def next(self) -> list[int]:
        out = []
        while len(out) < self.batch:
            if not self.queue:
                self.queue = self.rng.permutation(len(self.groups)).tolist()
            g = self.groups[self.queue.pop()]
            out.append(g[int(self.rng.integers(len(g)))])
        return out


def _mine(items: list) -> list:
    return [items[i] for i in dist.shard(len(items)).tolist()]


def _step(model, opt, sched, loss, tcfg: TrainConfig, scaler) -> None:
    scaler.scale(loss).backward()
    if tcfg.grad_clip > 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    sched.step()


@dataclass
class History:
    losses: dict[str, list[float]] = field(default_factory=dict)

    def add(self, **values: float) -> None:
        for k, v in values.items():
            self.losses.setdefault(k, []).append(float(v))

    def tail_mean(self, key: str, frac: float = 0.1) -> float:
        v = self.losses.get(key, [])
        k = max(1, int(len(v) * frac))
        return float(np.mean(v[-k:])) if v else float("nan")


def train_prompter(prompter: DualEncoder, captions, source: FrameSource, tokenizer,
                   tcfg: TrainConfig, device, seed: int = 0, strategy: str = "headtail",
                   precision: str = "fp32", desc: str = "prompter") -> History:  # fmt: skip
    """VTC only, on (clip, caption) pairs. With a frozen text tower the caption features are
    computed once (they do not change)."""
    prompter.to(device).train()
    hist = History()
    cache: dict[str, torch.Tensor] = {}
    if prompter.freeze_text:
        texts = sorted({c for _, c in captions.items})
        with torch.no_grad():
            for i in range(0, len(texts), 256):
                tok = tokenizer(
                    texts[i : i + 256],
                    padding=True,
                    truncation=True,
                    max_length=prompter.cfg.caption_len,
                    return_tensors="pt",
                )
                f = prompter.text_features(tok.input_ids.to(device), tok.attention_mask.to(device))
                cache.update(zip(texts[i : i + 256], f, strict=True))
    model = dist.wrap_model(prompter, find_unused_parameters=True)
    opt, sched = _optimizer(prompter, tcfg, ("text.",))
    scaler = dist.grad_scaler(precision, device)
    plan = _BatchPlan(len(captions), tcfg.batch_size, seed)
    dist.per_rank_batch(tcfg.batch_size)
    for step in progress(range(tcfg.steps), desc=desc):
        pos = _mine(list(range(tcfg.batch_size)))
        idx = plan.next()
        items = [captions.items[idx[p]] for p in pos]
        rngs = [np.random.default_rng([seed, step, p]) for p in pos]
        b = caption_batch(items, source, tokenizer, prompter.cfg.num_frames, strategy, rngs,
                          prompter.cfg.caption_len)  # fmt: skip
        with dist.autocast(precision, device):
            feats = model(b["pixels"].to(device))  # through the DDP wrapper: video tower
            if cache:
                tf = torch.stack([cache[c] for c in b["captions"]]).to(device)
            else:
                tf = prompter.text_features(b["ids"].to(device), b["mask"].to(device))
            loss = vtc_loss(_gather_with_grad(feats), _gather_with_grad(tf), prompter.temp())
        _step(model, opt, sched, loss, tcfg, scaler)
        prompter.temp.clamp_()
        hist.add(vtc=loss.item())
    prompter.eval()
    return hist


def pretrain_student(
    student: AlproStudent,
    captions,
    source: FrameSource,
    tokenizer,
    tcfg: TrainConfig,
    device,
    seed: int = 0,
    strategy: str = "headtail",
    precision: str = "fp32",
    desc: str = "student VTC+MLM",
) -> History:
    """ALPRO-style pretraining on captions: L = VTC + MLM (weights 1)."""
    student.to(device).train()
    model = dist.wrap_model(student, find_unused_parameters=True)
    opt, sched = _optimizer(student, tcfg, ("bert.",))
    scaler = dist.grad_scaler(precision, device)
    plan = _BatchPlan(len(captions), tcfg.batch_size, seed)
    dist.per_rank_batch(tcfg.batch_size)
    hist = History()
    for step in progress(range(tcfg.steps), desc=desc):
        pos = _mine(list(range(tcfg.batch_size)))
        idx = plan.next()
        items = [captions.items[idx[p]] for p in pos]
        rngs = [np.random.default_rng([seed, step, p]) for p in pos]
        b = caption_batch(items, source, tokenizer, student.cfg.num_frames, strategy, rngs,
                          student.cfg.caption_len)  # fmt: skip
        g = torch.Generator().manual_seed(int(seed * 100003 + step))
        mlm_ids, labels = mask_tokens(b["ids"], b["mask"], tokenizer, g)
        with dist.autocast(precision, device):
            losses = model(mode="pretrain", pixels=b["pixels"].to(device), ids=b["ids"].to(device),
                           mask=b["mask"].to(device), mlm_ids=mlm_ids.to(device),
                           mlm_labels=labels.to(device))  # fmt: skip
            loss = losses["vtc"] + losses["mlm"]
        _step(model, opt, sched, loss, tcfg, scaler)
        student.temp.clamp_()
        hist.add(vtc=losses["vtc"].item(), mlm=losses["mlm"].item())
    return hist


def qa_losses(student: AlproStudent, batch: dict, heur: dict | None, hcfg: HeuristicConfig,
              use_entity: bool, use_action: bool) -> dict[str, torch.Tensor]:  # fmt: skip
    """L_QA, L_E, L_A for one batch (``heur``: the prompters' outputs for these rows)."""
    c = batch["num_candidates"]
    fused, video = student.qa_forward(batch["pixels"], batch["ids"], batch["mask"], c)
    logits = student.qa_logits(fused, c)
    out = {"qa": torch.nn.functional.cross_entropy(logits.float(), batch["labels"])}
    if use_entity:
        feats = student.region_features(fused, batch["ids"].shape[1], heur["region"], c)
        out["entity"] = soft_cross_entropy(student.entity_head(feats), heur["q_entity"],
                                           ~heur["ignored"])  # fmt: skip
    if use_action:
        if hcfg.action_features == "unpooled":
            feats = student.window_features(video, heur["window"])
        else:  # second pass of the student on V[W]; pooled fusion output over visual positions
            f2, _ = student.qa_forward(heur["window_clip"], batch["ids"], batch["mask"], c)
            f2 = f2[:, batch["ids"].shape[1] :]
            feats = f2.view(-1, c, *f2.shape[1:]).mean(1).mean(1) if c else f2.mean(1)
        out["action"] = soft_cross_entropy(student.action_head(feats), heur["q_action"])
    return out


def finetune_qa(student: AlproStudent, train_set, source: FrameSource, tokenizer,
                tcfg: TrainConfig, device, heuristics: Heuristics | None = None,
                hcfg: HeuristicConfig | None = None, use_entity: bool = False,
                use_action: bool = False, seed: int = 0, strategy: str = "rand",
                precision: str = "fp32", group_by_video: bool = True,
                desc: str = "QA fine-tuning", on_step=None) -> History:  # fmt: skip
    """L = L_QA + λ_E L_E + λ_A L_A. Only the student and its heads train; the prompters (inside
    ``heuristics``) stay frozen, in eval mode, under no_grad."""
    hcfg = hcfg or HeuristicConfig()
    if (use_entity or use_action) and heuristics is None:
        from labcore.cli import UserError

        raise UserError("the entity/action heuristics need the prompters (heuristics=)")
    student.to(device).train()
    if heuristics is not None:
        heuristics.to(device).eval()
    model = dist.wrap_model(student, find_unused_parameters=True)
    opt, sched = _optimizer(student, tcfg, ("bert.",))
    scaler = dist.grad_scaler(precision, device)
    plan = _BatchPlan(len(train_set), tcfg.batch_size, seed,
                      train_set.groups() if group_by_video else None)  # fmt: skip
    dist.per_rank_batch(tcfg.batch_size)
    cfg, hist = student.cfg, History()
    for step in progress(range(tcfg.steps), desc=desc):
        pos = _mine(list(range(tcfg.batch_size)))
        idx = plan.next()
        srng = np.random.default_rng([seed, step, 99991])
        boxes = sample_crop_boxes(tcfg.batch_size, cfg.grid, hcfg, srng)[pos]
        win = sample_windows(tcfg.batch_size, cfg.num_frames, hcfg.action_window, srng)[pos]
        rngs = [np.random.default_rng([seed, step, p]) for p in pos]
        b = qa_batch([train_set[idx[p]] for p in pos], source, tokenizer, cfg.num_frames, strategy,
                     rngs, cfg.max_len, pool=train_set.examples)  # fmt: skip
        for k in ("pixels", "ids", "mask", "labels"):
            b[k] = b[k].to(device)
        with dist.autocast(precision, device):
            heur = None
            if use_entity or use_action:
                heur = heuristics.labels(b["pixels"], boxes if use_entity else None,
                                         win if use_action else None)  # fmt: skip
            losses = model(mode="qa", batch=b, heur=heur, hcfg=hcfg, use_entity=use_entity,
                           use_action=use_action)  # fmt: skip
            loss = losses["qa"]
            if use_entity:
                loss = loss + hcfg.lambda_entity * losses["entity"]
            if use_action:
                loss = loss + hcfg.lambda_action * losses["action"]
        _step(model, opt, sched, loss, tcfg, scaler)
        hist.add(total=loss.item(), **{k: v.item() for k, v in losses.items()})
        if on_step is not None:
            on_step(step, losses)
    return hist


@torch.no_grad()
def evaluate_qa(student: AlproStudent, dataset, source: FrameSource, tokenizer, device,
                batch_size: int = 32, strategy: str = "uniform", seed: int = 0,
                precision: str = "fp32", desc: str = "evaluate") -> dict:  # fmt: skip
    """Accuracy overall and per type (NExT-QA: also C/T/D groups), merged as sums over ranks."""
    student.to(device).eval()
    mine = dist.shard(len(dataset)).tolist()
    correct, types, preds = [], [], []
    for i in progress(range(0, len(mine), batch_size), desc=desc):
        chunk = [dataset[j] for j in mine[i : i + batch_size]]
        rngs = [np.random.default_rng([seed, j]) for j in mine[i : i + batch_size]]
        b = qa_batch(chunk, source, tokenizer, student.cfg.num_frames, strategy, rngs,
                     student.cfg.max_len, pool=dataset.examples)  # fmt: skip
        with dist.autocast(precision, device):
            fused, _ = student.qa_forward(b["pixels"].to(device), b["ids"].to(device),
                                          b["mask"].to(device), b["num_candidates"])  # fmt: skip
            logits = student.qa_logits(fused, b["num_candidates"]).float()
        p = logits.argmax(-1).cpu()
        correct += (p == b["labels"]).tolist()
        types += b["types"]
        preds += p.tolist()
    report = accuracy_report(np.array(correct, bool), types, sums=True)
    return _merge_report(report, nextqa=getattr(dataset, "mode", "oe") == "mc")


def accuracy_report(correct: np.ndarray, types: list[str], sums: bool = False) -> dict:
    """Per-type hit/count sums (``sums=True``) or percentages: overall, per type."""
    out = {"all": [int(correct.sum()), len(correct)]}
    for t in sorted(set(types)):
        m = np.array([x == t for x in types], bool)
        out[t] = [int(correct[m].sum()), int(m.sum())]
    return out if sums else _percent(out)


def _percent(sums: dict) -> dict:
    return {k: (100.0 * h / n if n else float("nan")) for k, (h, n) in sums.items()}


def _merge_report(sums: dict, nextqa: bool) -> dict:
    keys = sorted(sums)
    flat = {}
    for k in keys:
        flat[f"{k}/hit"], flat[f"{k}/n"] = sums[k]
    if dist.world_size() > 1:
        # every rank must reduce the same keys: gather the type names first
        import torch.distributed as tdist

        names: list = [None] * dist.world_size()
        tdist.all_gather_object(names, keys)
        keys = sorted({k for ks in names for k in ks})
        flat = {f"{k}/{s}": flat.get(f"{k}/{s}", 0) for k in keys for s in ("hit", "n")}
        flat = dist.all_reduce_dict(flat)
    merged = {k: [flat[f"{k}/hit"], flat[f"{k}/n"]] for k in keys}
    report = {"accuracy": _percent({"all": merged["all"]})["all"],
              "per_type": _percent({k: v for k, v in merged.items() if k != "all"}),
              "counts": {k: [int(h), int(n)] for k, (h, n) in merged.items()}}  # fmt: skip
    if nextqa:
        groups: dict[str, list[float]] = {}
        for k, (h, n) in merged.items():
            g = NEXT_GROUPS.get(k)
            if g:
                acc = groups.setdefault(g, [0, 0])
                acc[0] += h
                acc[1] += n
        report["groups"] = _percent(groups)
    return report


def _nan_to_none(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x
