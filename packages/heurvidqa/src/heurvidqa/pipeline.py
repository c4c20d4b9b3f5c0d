"""The method end to end, as functions the demo, the CLI and the tests share.

``load_movingshapes`` reads a generated MovingShapes-QA root back through the real loaders;
``train_prompters`` trains the entity and action prompters (VTC) and freezes them;
``make_heuristics`` builds the prompt banks; ``prompter_zero_shot`` is acceptance test T3;
``run_arm`` fine-tunes one ablation arm from the pretrained student and evaluates it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from heurvidqa import synthetic as syn
from heurvidqa.config import HeuristicConfig, ModelConfig, TrainConfig
from heurvidqa.data import CaptionSet, FrameSource, MsrvttQA, NextQA
from heurvidqa.heuristics import Heuristics, build_prompt_bank, soft_labels
from heurvidqa.model import AlproStudent, DualEncoder, load_text_model
from heurvidqa.train import evaluate_qa, finetune_qa, train_prompter
from heurvidqa.vocab import mine_vocabularies
from labcore.video import normalize_frames, sample_indices

__all__ = ["ARMS", "MovingShapes", "load_movingshapes", "make_heuristics", "prompter_zero_shot",
           "run_arm", "train_prompters"]  # fmt: skip

ARMS = {"plain": (False, False), "+E": (True, False), "+A": (False, True), "+E+A": (True, True)}


@dataclass
class MovingShapes:
    root: Path
    captions: CaptionSet
    oe: dict  # split -> MsrvttQA
    mc: dict  # split -> NextQA
    ans2label: dict


def load_movingshapes(root: str | Path) -> MovingShapes:
    root = Path(root)
    a2l = root / "msrvtt" / "train_ans2label.json"
    oe = {s: MsrvttQA(root / "msrvtt" / f"{s}.jsonl", a2l, root / "videos", train=s == "train")
          for s in ("train", "val", "test")}  # fmt: skip
    mc = {s: NextQA(root / "nextqa" / f"{s}.csv", root / "nextqa" / "map_vid_vidorID.json", root)
          for s in ("train", "val", "test")}  # fmt: skip
    caps = CaptionSet(root / "captions.jsonl", root / "captions")
    return MovingShapes(root, caps, oe, mc, oe["train"].ans2label)


def train_prompters(cfg: ModelConfig, hcfg: HeuristicConfig, captions, source, tokenizer,
                    tcfg: TrainConfig, device, seed: int = 0, precision: str = "fp32",
                    text_name: str = "minilm"):  # fmt: skip
    """Two separately VTC-trained dual encoders (or one, ``shared_prompter``), frozen."""
    text = load_text_model(text_name)  # the frozen text tower can be shared: it never changes
    text.requires_grad_(False)
    out = []
    for k, name in enumerate(["entity"] if hcfg.shared_prompter else ["entity", "action"]):
        torch.manual_seed(seed * 1000 + 17 + k)
        p = DualEncoder(cfg, text_pooling=hcfg.prompter_text_pooling, text_model=text)
        h = train_prompter(p, captions, source, tokenizer, tcfg, device, seed=seed * 1000 + k,
                           precision=precision, desc=f"{name} prompter (VTC)")  # fmt: skip
        p.requires_grad_(False).eval()
        out.append((p, h))
    return out[0], (out[1] if len(out) > 1 else (None, None))


def make_heuristics(entity_p, action_p, vocab: dict, tokenizer, hcfg: HeuristicConfig,
                    cfg: ModelConfig) -> Heuristics:  # fmt: skip
    ap = action_p if action_p is not None else entity_p
    eb = build_prompt_bank(entity_p, tokenizer, vocab["entities"], "entity", cfg.caption_len)
    ab = build_prompt_bank(ap, tokenizer, vocab["actions"], "action", cfg.caption_len)
    return Heuristics(entity_p, action_p, eb, ab, hcfg, cfg.patch_size, cfg.grid)


def _clip_pixels(frames: np.ndarray, cfg: ModelConfig) -> torch.Tensor:
    idx = sample_indices(len(frames), cfg.num_frames, "uniform")
    return normalize_frames(frames[idx], channels_last=True)


def prompter_zero_shot(heur: Heuristics, vocab: dict, cfg: ModelConfig, n: int = 120,
                       seed: int = 12345) -> dict:  # fmt: skip
    """T3 on fresh clips: action top-1 on single-phase clips (the prompter sees a half window, as
    in training); entity top-1 on grid crops covering ≥ 60 % of exactly one object (< 10 % of the
    other). An entity guess is right when it names the object: its colour-shape bigram, shape or
    colour. Chance is reported alongside."""
    rng = np.random.default_rng(seed)
    dev = heur.entity_bank.device
    actions = vocab["actions"]
    act_name = {m: (f"move {m}" if m in syn.DIRECTIONS else m) for m in syn.MOTIONS}
    a_hit = a_n = 0
    e_hit = e_n = 0
    e_chance = []
    ents = vocab["entities"]
    for _ in range(n):
        meta = syn._sample_clip(rng, two_phase=False)
        frames, tmask, dmask = syn.render_clip(meta)
        px = _clip_pixels(frames, cfg)[None].to(dev)
        win = torch.arange(cfg.num_frames // 2)[None]
        out = heur.labels(px, None, win)
        if act_name[meta["motions"][0]] in actions:
            a_n += 1
            a_hit += actions[int(out["q_action"].argmax())] == act_name[meta["motions"][0]]
        # entity: the grid box with the best coverage of one object
        for _obj, m_own, m_other, colour, shape in (
            ("target", tmask, dmask, meta["colour"], meta["shape"]),
            ("distractor", dmask, tmask, meta["d_colour"], meta["d_shape"]),
        ):
            box = _covering_box(m_own, m_other, cfg)
            if box is None:
                continue
            q, _ = soft_labels(heur.entity_prompter, _crop(px, box, cfg), heur.entity_bank, 0.0)
            names = {f"{colour} {shape}", shape, colour}
            guess = ents[int(q.argmax())]
            e_n += 1
            e_hit += guess in names
            e_chance.append(len(names & set(ents)) / len(ents))
    return {"action_top1": a_hit / max(a_n, 1), "action_n": a_n,
            "action_chance": 1 / max(len(actions), 1),
            "entity_top1": e_hit / max(e_n, 1), "entity_n": e_n,
            "entity_chance": float(np.mean(e_chance)) if e_chance else float("nan")}  # fmt: skip


def _covering_box(m_own: np.ndarray, m_other: np.ndarray, cfg: ModelConfig):
    """Smallest grid box covering ≥ 60 % of the object (over the frames) and < 10 % of the other."""
    p, g = cfg.patch_size, cfg.grid
    own = m_own.sum(0).astype(float)
    oth = m_other.sum(0).astype(float)
    if own.sum() == 0:
        return None
    best = None
    for y0 in range(g):
        for x0 in range(g):
            for y1 in range(y0 + 1, g + 1):
                for x1 in range(x0 + 1, g + 1):
                    sl = (slice(y0 * p, y1 * p), slice(x0 * p, x1 * p))
                    c_own = own[sl].sum() / own.sum()
                    c_oth = oth[sl].sum() / max(oth.sum(), 1)
                    area = (y1 - y0) * (x1 - x0)
                    if c_own >= 0.6 and c_oth < 0.1 and (best is None or area < best[0]):
                        best = (area, (y0, x0, y1, x1))
    return None if best is None else torch.tensor([best[1]])


def _crop(px, box, cfg):
    from heurvidqa.heuristics import crop_video

    return crop_video(px, box, cfg.patch_size)


def new_student(pretrained: AlproStudent, num_answers: int, vocab: dict, seed: int) -> AlproStudent:
    """A copy of the pretrained student with freshly initialised heads (seeded)."""
    s = copy.deepcopy(pretrained)
    torch.manual_seed(seed)
    from heurvidqa.model import MLP

    d = s.hidden
    s.qa_head = MLP(d, num_answers)
    s.mc_head = MLP(d, 1)
    s.entity_head = MLP(d, len(vocab["entities"]))
    s.action_head = MLP(d, len(vocab["actions"]))
    return s


def run_arm(arm: str, fmt: str, pretrained: AlproStudent, data: MovingShapes, heur: Heuristics,
            vocab: dict, source: FrameSource, tokenizer, tcfg: TrainConfig,
            hcfg: HeuristicConfig, device, seed: int, precision: str = "fp32",
            eval_val: bool = False) -> dict:  # fmt: skip
    use_e, use_a = ARMS[arm]
    student = new_student(pretrained, len(data.ans2label), vocab, seed)
    sets = data.oe if fmt == "oe" else data.mc
    hist = finetune_qa(student, sets["train"], source, tokenizer, tcfg, device, heuristics=heur,
                       hcfg=hcfg, use_entity=use_e, use_action=use_a, seed=seed,
                       precision=precision, desc=f"{fmt} {arm} seed {seed}")  # fmt: skip
    val = (evaluate_qa(student, sets["val"], source, tokenizer, device, precision=precision,
                       desc="val") if eval_val else None)  # fmt: skip
    test = evaluate_qa(student, sets["test"], source, tokenizer, device, precision=precision,
                       desc="test")  # fmt: skip
    return {"val": val, "test": test, "final_losses": {k: hist.tail_mean(k) for k in hist.losses}}


def mine_train_vocab(data: MovingShapes, hcfg: HeuristicConfig) -> dict:
    """𝓔, 𝓐 from the training split only (questions, answers, candidates of both formats)."""
    return mine_vocabularies(data.oe["train"].texts() + data.mc["train"].texts(), hcfg)
