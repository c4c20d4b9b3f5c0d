"""Real-format loaders (spec §4.2): the same code path for real data and MovingShapes-QA.

- :class:`MsrvttQA`: MSRVTT-QA / MSVD-QA: jsonl lines ``{video_id, question, answer,
  answer_type}``, ``train_ans2label.json``, videos ``<video_dir>/<video_id><ext>`` (``.mp4``;
  MSVD: ``.avi``). Training groups questions by video (ALPRO ``max_n_example_per_group=1``: one
  question per video per pass).
- :class:`NextQA`: csv ``video, frame_count, width, height, question, answer, qid, type[, a0..a4]``
  plus ``map_vid_vidorID.json`` (video → VidOR path, no extension, under ``video_root``);
  ``mode='mc'`` (5 candidates, ``answer`` is the index) or ``'oe'`` (answer string).
- :class:`CaptionSet`: ``{video_id, caption}`` jsonl for prompter / student pretraining.
- :class:`FrameSource`: ``labcore.video`` decoding; ``cache=True`` decodes each file once (all
  frames, uint8) and samples indices from memory afterwards.
- :func:`qa_batch` / :func:`caption_batch`: tokenise, expand multiple choice to ``[CLS] q [SEP]
  c_i [SEP]`` rows, stack frames; a video that fails to decode is replaced by another example
  drawn at random (ALPRO's behaviour), up to ``retries`` times.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from labcore.cli import UserError
from labcore.video import VideoDecodeError, decode_all, normalize_frames, read_video, sample_indices

__all__ = [
    "CaptionSet",
    "FrameSource",
    "MsrvttQA",
    "NextQA",
    "QAExample",
    "caption_batch",
    "qa_batch",
]

NEXT_GROUPS = {"CW": "C", "CH": "C", "TN": "T", "TC": "T", "TP": "T",
               "DC": "D", "DB": "D", "DL": "D", "DO": "D"}  # fmt: skip


@dataclass
class QAExample:
    video_id: str
    path: Path
    question: str
    answer: str
    answer_type: str
    label: int  # ans2label id (open-ended; -1 if absent) or candidate index (multiple choice)
    candidates: list[str] | None = None
    qid: str = ""


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(2, "annotation file not found", str(path))
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    return rows


def load_ans2label(path: str | Path) -> dict[str, int]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "ans2label file not found", str(path))
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(m, dict) or not m:
        raise UserError(f"{path}: expected a non-empty mapping answer → label")
    return {str(k): int(v) for k, v in m.items()}


class _QASet:
    examples: list[QAExample]
    mode: str

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> QAExample:
        return self.examples[i]

    def groups(self) -> list[list[int]]:
        """Example indices grouped by video (ALPRO samples one question per group per pass)."""
        by: dict[str, list[int]] = {}
        for i, e in enumerate(self.examples):
            by.setdefault(e.video_id, []).append(i)
        return list(by.values())

    def texts(self) -> list[str]:
        """Questions, answers and candidates (the vocabulary miner's input)."""
        out = []
        for e in self.examples:
            out += [e.question, e.answer, *(e.candidates or [])]
        return out

    def _check(self, src: Path) -> None:
        if not self.examples:
            raise UserError(f"{src}: the split is empty")
        missing = [e.path for e in self.examples[:2000] if not e.path.is_file()]
        if missing:
            raise FileNotFoundError(2, f"video not found ({len(missing)} missing)", str(missing[0]))


class MsrvttQA(_QASet):
    """Open-ended MSRVTT-QA / MSVD-QA. ``train=True``: an answer absent from ans2label is an error
    (naming it); otherwise it gets label -1 and counts as wrong, as in ALPRO's evaluation."""

    mode = "oe"

    def __init__(self, jsonl: str | Path, ans2label: str | Path | dict, video_dir: str | Path,
                 ext: str = ".mp4", train: bool = False):  # fmt: skip
        jsonl, video_dir = Path(jsonl), Path(video_dir)
        self.ans2label = ans2label if isinstance(ans2label, dict) else load_ans2label(ans2label)
        self.examples = []
        for i, r in enumerate(_read_jsonl(jsonl)):
            try:
                vid, q, a = str(r["video_id"]), str(r["question"]), str(r["answer"])
            except (KeyError, TypeError):
                raise UserError(f"{jsonl}: row {i + 1} lacks video_id/question/answer") from None
            label = self.ans2label.get(a, -1)
            if train and label < 0:
                raise UserError(f"{jsonl}: row {i + 1}: answer {a!r} is not in train_ans2label")
            self.examples.append(QAExample(vid, video_dir / f"{vid}{ext}", q, a,
                                           str(r.get("answer_type", "all")), label,
                                           qid=str(r.get("question_id", i))))  # fmt: skip
        self._check(jsonl)


class NextQA(_QASet):
    """NExT-QA csv. ``mode='mc'``: candidates a0..a4, ``answer`` = index; ``'oe'``: the answer
    string with ``ans2label`` (required)."""

    def __init__(self, csv_path: str | Path, map_json: str | Path, video_root: str | Path,
                 mode: str = "mc", ext: str = ".mp4", ans2label: dict | str | Path | None = None,
                 train: bool = False):  # fmt: skip
        if mode not in ("mc", "oe"):
            raise UserError(f"NExT-QA mode must be mc or oe, got {mode!r}")
        self.mode = mode
        csv_path, map_json, root = Path(csv_path), Path(map_json), Path(video_root)
        if not csv_path.is_file():
            raise FileNotFoundError(2, "annotation file not found", str(csv_path))
        if not map_json.is_file():
            raise FileNotFoundError(2, "video map not found", str(map_json))
        try:
            vmap = json.loads(map_json.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{map_json}: not valid JSON ({e.msg})") from None
        if mode == "oe":
            if ans2label is None:
                raise UserError("NExT-QA open-ended needs ans2label")
            self.ans2label = ans2label if isinstance(ans2label, dict) else load_ans2label(ans2label)
        self.examples = []
        with open(csv_path, newline="", encoding="utf-8") as f:
            for i, r in enumerate(csv.DictReader(f)):
                try:
                    vid, q, a = str(r["video"]), r["question"], r["answer"]
                    rel = vmap[vid]
                except KeyError as e:
                    raise UserError(f"{csv_path}: row {i + 1}: missing {e} (column or video "
                                    "map entry)") from None  # fmt: skip
                qtype = r.get("type", "all") or "all"
                if mode == "mc":
                    try:
                        cands = [r[f"a{k}"] for k in range(5)]
                        label = int(a)
                    except (KeyError, ValueError):
                        raise UserError(f"{csv_path}: row {i + 1}: multiple choice needs a0..a4 "
                                        "and an integer answer") from None  # fmt: skip
                    if not 0 <= label < 5:
                        raise UserError(
                            f"{csv_path}: row {i + 1}: answer index {label} not in 0..4"
                        )
                    self.examples.append(
                        QAExample(
                            vid,
                            root / f"{rel}{ext}",
                            q,
                            cands[label],
                            qtype,
                            label,
                            cands,
                            str(r.get("qid", i)),
                        )
                    )
                else:
                    label = self.ans2label.get(a, -1)
                    if train and label < 0:
                        raise UserError(f"{csv_path}: row {i + 1}: answer {a!r} is not in "
                                        "ans2label")  # fmt: skip
                    self.examples.append(QAExample(vid, root / f"{rel}{ext}", q, a, qtype, label,
                                                   qid=str(r.get("qid", i))))  # fmt: skip
        self._check(csv_path)


class CaptionSet:
    """(video, caption) pairs from a ``{video_id, caption}`` jsonl."""

    def __init__(self, jsonl: str | Path, video_dir: str | Path, ext: str = ".mp4"):
        jsonl, video_dir = Path(jsonl), Path(video_dir)
        rows = _read_jsonl(jsonl)
        try:
            self.items = [(video_dir / f"{r['video_id']}{ext}", str(r["caption"])) for r in rows]
        except (KeyError, TypeError):
            raise UserError(f"{jsonl}: every row needs video_id and caption") from None
        if not self.items:
            raise UserError(f"{jsonl}: no captions")

    def __len__(self) -> int:
        return len(self.items)


class FrameSource:
    """Sampled, CLIP-normalised clips ``(T, 3, H, W)`` from video files through labcore.video."""

    def __init__(self, size: int, cache: bool = True):
        self.size, self.cache = size, cache
        self._frames: dict[Path, np.ndarray] = {}

    def clip(self, path: Path, num_frames: int, strategy: str,
             rng: np.random.Generator) -> torch.Tensor:  # fmt: skip
        if not self.cache:
            return read_video(path, num_frames, strategy, self.size, rng=rng)
        frames = self._frames.get(path)
        if frames is None:
            frames = self._frames[path] = decode_all(path, self.size)
        idx = sample_indices(len(frames), num_frames, strategy, rng)
        return normalize_frames(frames[idx], channels_last=True)


def _clips_with_resample(items: list, get_path, source: FrameSource, num_frames: int,
                         strategy: str, rng: np.random.Generator, pool: list,
                         retries: int) -> tuple[list, torch.Tensor]:  # fmt: skip
    out_items, clips = [], []
    rngs = rng if isinstance(rng, list) else [rng] * len(items)
    for it, r in zip(items, rngs, strict=True):
        for attempt in range(retries + 1):
            try:
                clips.append(source.clip(get_path(it), num_frames, strategy, r))
                out_items.append(it)
                break
            except VideoDecodeError as e:
                if attempt == retries:
                    raise
                warnings.warn(f"{e}; drawing another example", stacklevel=2)
                it = pool[int(r.integers(len(pool)))]
    return out_items, torch.stack(clips)


def qa_batch(examples: list[QAExample], source: FrameSource, tokenizer, num_frames: int,
             strategy: str, rng: np.random.Generator, max_len: int = 40,
             pool: list[QAExample] | None = None, retries: int = 3) -> dict:  # fmt: skip
    """Pixels (B, T, 3, H, W), token ids, labels; multiple choice: B·5 rows ``q [SEP] c_i``."""
    exs, pixels = _clips_with_resample(examples, lambda e: e.path, source, num_frames, strategy,
                                       rng, pool or examples, retries)  # fmt: skip
    mc = exs[0].candidates is not None
    if mc:
        qs = [e.question for e in exs for _ in e.candidates]
        cs = [c for e in exs for c in e.candidates]
        tok = tokenizer(qs, cs, padding=True, truncation=True, max_length=max_len,
                        return_tensors="pt")  # fmt: skip
    else:
        tok = tokenizer([e.question for e in exs], padding=True, truncation=True,
                        max_length=max_len, return_tensors="pt")  # fmt: skip
    return {"pixels": pixels, "ids": tok.input_ids, "mask": tok.attention_mask,
            "labels": torch.tensor([e.label for e in exs]),
            "num_candidates": len(exs[0].candidates) if mc else 0,
            "types": [e.answer_type for e in exs], "examples": exs}  # fmt: skip


def mask_tokens(ids: torch.Tensor, mask: torch.Tensor, tokenizer, rng: torch.Generator,
                prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """BERT MLM masking: 15 % of real tokens, 80 % [MASK] / 10 % random / 10 % kept."""
    special = torch.tensor(tokenizer.all_special_ids)
    can = (mask > 0) & ~torch.isin(ids, special)
    pick = (torch.rand(ids.shape, generator=rng) < prob) & can
    labels = torch.where(pick, ids, torch.full_like(ids, -100))
    u = torch.rand(ids.shape, generator=rng)
    out = ids.clone()
    out[pick & (u < 0.8)] = tokenizer.mask_token_id
    rnd = pick & (u >= 0.8) & (u < 0.9)
    out[rnd] = torch.randint(len(tokenizer), ids.shape, generator=rng)[rnd]
    return out, labels


def caption_batch(items: list[tuple[Path, str]], source: FrameSource, tokenizer, num_frames: int,
                  strategy: str, rng: np.random.Generator, max_len: int = 30,
                  retries: int = 3, pool: list | None = None) -> dict:  # fmt: skip
    its, pixels = _clips_with_resample(items, lambda it: it[0], source, num_frames, strategy, rng,
                                       pool or items, retries)  # fmt: skip
    tok = tokenizer([c for _, c in its], padding=True, truncation=True, max_length=max_len,
                    return_tensors="pt")  # fmt: skip
    return {
        "pixels": pixels,
        "ids": tok.input_ids,
        "mask": tok.attention_mask,
        "captions": [c for _, c in its],
    }
