"""MovingShapes-QA (spec §4.3): synthetic clips written to disk in the real data sets' formats.

Each clip: 16 frames of 64×64 at 8 fps, a noisy grey background, a *target* (colour × shape) doing a
two-phase motion (frames 0–7, 8–15, each from move left/right/up/down, grow, shrink) and a
*distractor* of another colour and shape, static or doing one motion the target never does.
:func:`render_clip` is deterministic given the clip's metadata (also the per-frame masks).

:func:`generate` writes under ``root``::

    videos/<id>.mp4                 QA clips (mpeg4); captions/<id>.mp4 caption clips
    captions.jsonl                  {video_id, caption}  (pretraining corpus, 5 templates)
    msrvtt/{train,val,test}.jsonl   {video_id, question, answer, answer_type}  (MSRVTT-QA format)
    msrvtt/train_ans2label.json
    nextqa/{train,val,test}.csv     video,frame_count,width,height,question,answer,qid,type,a0..a4
    nextqa/map_vid_vidorID.json     video → "videos/<id>" (NExT-QA's VidOR path, no extension)
    meta/{split}.jsonl              the clip parameters (colours, shapes, motions, boxes)
    msvd/ (``write_avi``)           the val split as ``.avi`` (mjpeg) in the MSVD-QA layout

Question types (open-ended answer_type / NExT code): colour (what / DO), shape (what / DO),
first direction (where / DL), after (how / TN), before (how / TP). The last two are the temporal
questions. Multiple choice: 5 same-category candidates; shapes pad their 3 with two undrawn ones.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labcore.cli import progress

__all__ = ["COLOURS", "MOTIONS", "SHAPES", "SyntheticSizes", "generate", "render_clip"]

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 220, 40),
    "purple": (150, 50, 200),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
EXTRA_SHAPES = ("diamond", "star")  # multiple-choice padding only, never drawn
MOTIONS = ("left", "right", "up", "down", "grow", "shrink")
DIRECTIONS = MOTIONS[:4]
SIZE, FRAMES, FPS, PHASE = 64, 16, 8, 8
_STEP = 2.0  # px per frame
_VERB = {"left": "moves left", "right": "moves right", "up": "moves up", "down": "moves down",
         "grow": "grows", "shrink": "shrinks"}  # fmt: skip
CAPTION_TEMPLATES = (
    "a {c} {s} {motion} while a {dc} {ds} {d}",
    "there is a {c} {s} that {motion}, and a {dc} {ds} that {d}",
    "a {dc} {ds} {d} as a {c} {s} {motion}",
    "the {c} {s} {motion}; the {dc} {ds} {d}",
    "in this clip a {c} {s} {motion} and a {dc} {ds} {d}",
)
QTYPES = ("colour", "shape", "where", "after", "before")
ANSWER_TYPE = {"colour": "what", "shape": "what", "where": "where", "after": "how",
               "before": "how"}  # fmt: skip
NEXT_TYPE = {"colour": "DO", "shape": "DO", "where": "DL", "after": "TN", "before": "TP"}


@dataclass
class SyntheticSizes:
    captions: int = 1200
    train: int = 400
    val: int = 300
    test: int = 600


def _trajectory(motion: str, start: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres (PHASE, 2) as (y, x) and radii (PHASE,) for one phase starting at ``start``."""
    k = np.arange(1, PHASE + 1, dtype=float)
    centre = np.repeat(start[None].astype(float), PHASE, 0)
    r = np.full(PHASE, radius, dtype=float)
    d = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}.get(motion)
    if d is not None:
        centre = centre + np.outer(k, d) * _STEP
    elif motion == "grow":
        r = radius * (1 + 0.5 * k / PHASE)
    else:
        r = radius * (1 - 0.4 * k / PHASE)
    return centre, r


def _path(motions: tuple[str, str], start, radius) -> tuple[np.ndarray, np.ndarray]:
    c1, r1 = _trajectory(motions[0], np.asarray(start), radius)
    c2, r2 = _trajectory(motions[1], c1[-1], r1[-1])
    centres = np.concatenate([[start], c1[:-1], [c1[-1]], c2[:-1]])[:FRAMES]
    radii = np.concatenate([[radius], r1[:-1], [r1[-1]], r2[:-1]])[:FRAMES]
    return np.asarray(centres, float), np.asarray(radii, float)


def _fits(centres, radii, margin=1.0) -> bool:
    lo = (centres - radii[:, None]).min()
    hi = (centres + radii[:, None]).max()
    return lo >= margin and hi <= SIZE - 1 - margin


def _shape_mask(shape: str, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    # triangle pointing up: inside the lines from the apex to the base corners
    return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)


def _sample_clip(rng: np.random.Generator, two_phase: bool = True) -> dict:
    colours = list(COLOURS)
    c, dc = rng.choice(colours, 2, replace=False)
    s, ds = rng.choice(SHAPES, 2, replace=False)
    while True:
        m1 = str(rng.choice(MOTIONS))
        m2 = str(rng.choice([m for m in MOTIONS if m != m1])) if two_phase else m1
        radius = float(rng.uniform(6.0, 8.0))
        start = rng.uniform(10, SIZE - 10, size=2)
        centres, radii = _path((m1, m2), start, radius)
        if _fits(centres, radii):
            break
    others = [m for m in MOTIONS if m not in (m1, m2)]
    dmotion = "still" if rng.random() < 0.5 else str(rng.choice(others))
    for _ in range(200):
        dr = float(rng.uniform(5.0, 7.0))
        dstart = rng.uniform(8, SIZE - 8, size=2)
        dm = ("grow", "grow") if dmotion == "still" else (dmotion, dmotion)
        dcent, drad = _path(dm, dstart, dr)
        if dmotion == "still":
            dcent, drad = np.repeat(dstart[None], FRAMES, 0), np.full(FRAMES, dr)
        gap = np.linalg.norm(dcent - centres, axis=1) - drad - radii
        if _fits(dcent, drad) and gap.min() > 3:
            break
    return {"colour": str(c), "shape": str(s), "motions": [m1, m2], "centres": centres.tolist(),
            "radii": radii.tolist(), "d_colour": str(dc), "d_shape": str(ds),
            "d_motion": dmotion, "d_centres": dcent.tolist(), "d_radii": drad.tolist(),
            "noise_seed": int(rng.integers(2**31))}  # fmt: skip


def render_clip(meta: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(frames uint8 (16, 64, 64, 3), target masks (16, 64, 64) bool, distractor masks)``."""
    rng = np.random.default_rng(meta["noise_seed"])
    frames = np.clip(110 + rng.normal(0, 8, size=(FRAMES, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    tmask = np.zeros((FRAMES, SIZE, SIZE), bool)
    dmask = np.zeros_like(tmask)
    for t in range(FRAMES):
        dm = _shape_mask(meta["d_shape"], *meta["d_centres"][t], meta["d_radii"][t])
        tm = _shape_mask(meta["shape"], *meta["centres"][t], meta["radii"][t])
        frames[t][dm] = COLOURS[meta["d_colour"]]
        frames[t][tm] = COLOURS[meta["colour"]]
        tmask[t], dmask[t] = tm, dm & ~tm
    return frames, tmask, dmask


def caption(meta: dict, rng: np.random.Generator) -> str:
    m1, m2 = meta["motions"]
    motion = _VERB[m1] if m1 == m2 else f"{_VERB[m1]} then {_VERB[m2]}"
    d = "stays still" if meta["d_motion"] == "still" else _VERB[meta["d_motion"]]
    t = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
    return t.format(c=meta["colour"], s=meta["shape"], motion=motion, dc=meta["d_colour"],
                    ds=meta["d_shape"], d=d)  # fmt: skip


def question(meta: dict, qtype: str) -> tuple[str, str, list[str]]:
    """(question, answer, candidate pool of the answer's category)."""
    c, s = meta["colour"], meta["shape"]
    m1, m2 = meta["motions"]
    if qtype == "colour":
        return f"what color is the object that {_VERB[m1]}?", c, list(COLOURS)
    if qtype == "shape":
        return f"what shape is the {c} object?", s, [*SHAPES, *EXTRA_SHAPES]
    if qtype == "where":
        return f"where does the {c} {s} go first?", m1, list(MOTIONS)
    if qtype == "after":
        return f"what does the {c} {s} do after it {_VERB[m1]}?", m2, list(MOTIONS)
    return f"what does the {c} {s} do before it {_VERB[m2]}?", m1, list(MOTIONS)


def _qa_clip(rng: np.random.Generator, qtype: str) -> dict:
    while True:
        meta = _sample_clip(rng, two_phase=True)
        if qtype != "where" or meta["motions"][0] in DIRECTIONS:
            return meta


def _candidates(answer: str, pool: list[str], rng) -> tuple[list[str], int]:
    others = [p for p in pool if p != answer]
    cands = [answer, *rng.choice(others, 4, replace=False).tolist()]
    order = rng.permutation(5)
    cands = [cands[i] for i in order]
    return cands, cands.index(answer)


def generate(root: str | Path, sizes: SyntheticSizes | None = None, seed: int = 0,
             write_avi: bool = False, show_progress: bool = True) -> Path:  # fmt: skip
    """Write MovingShapes-QA under ``root`` (see the module docstring); returns ``root``."""
    from labcore.video import write_video

    sizes = sizes or SyntheticSizes()
    root = Path(root)
    rng = np.random.default_rng(seed)
    for sub in ("videos", "captions", "msrvtt", "nextqa", "meta"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    total = sizes.captions + sizes.train + sizes.val + sizes.test
    bar = progress(total=total, desc="writing MovingShapes-QA", disable=not show_progress or None)
    with (
        open(root / "captions.jsonl", "w") as fc,
        open(root / "meta" / "captions.jsonl", "w") as fm,
    ):
        for i in range(sizes.captions):
            meta = _sample_clip(rng, two_phase=bool(rng.random() < 0.5))
            vid = f"cap{i:05d}"
            write_video(root / "captions" / f"{vid}.mp4", render_clip(meta)[0], fps=FPS)
            fc.write(json.dumps({"video_id": vid, "caption": caption(meta, rng)}) + "\n")
            fm.write(json.dumps({"video_id": vid, **meta}) + "\n")
            bar.update(1)
    vid_map, answers = {}, set()
    for split in ("train", "val", "test"):
        n = getattr(sizes, split)
        rows_oe, rows_mc, metas = [], [], []
        for i in range(n):
            qtype = QTYPES[i % len(QTYPES)] if n >= len(QTYPES) else str(rng.choice(QTYPES))
            meta = _qa_clip(rng, qtype)
            vid = f"{split}{i:05d}"
            write_video(root / "videos" / f"{vid}.mp4", render_clip(meta)[0], fps=FPS)
            q, a, pool = question(meta, qtype)
            rows_oe.append({"video_id": vid, "question": q, "answer": a,
                            "answer_type": ANSWER_TYPE[qtype]})  # fmt: skip
            cands, label = _candidates(a, pool, rng)
            rows_mc.append({"video": vid, "frame_count": FRAMES, "width": SIZE, "height": SIZE,
                            "question": q, "answer": label, "qid": i, "type": NEXT_TYPE[qtype],
                            **{f"a{k}": c for k, c in enumerate(cands)}})  # fmt: skip
            metas.append({"video_id": vid, "qtype": qtype, **meta})
            vid_map[vid] = f"videos/{vid}"
            if split == "train":
                answers.add(a)
            bar.update(1)
        with open(root / "msrvtt" / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows_oe)
        with open(root / "nextqa" / f"{split}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows_mc[0]))
            w.writeheader()
            w.writerows(rows_mc)
        with open(root / "meta" / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(m) + "\n" for m in metas)
        if write_avi and split == "val":
            (root / "msvd" / "videos").mkdir(parents=True, exist_ok=True)
            for m in metas:
                write_video(root / "msvd" / "videos" / f"{m['video_id']}.avi",
                            render_clip(m)[0], fps=FPS)  # fmt: skip
            with open(root / "msvd" / "val.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows_oe)
    bar.close()
    ans2label = {a: i for i, a in enumerate(sorted(answers))}
    (root / "msrvtt" / "train_ans2label.json").write_text(json.dumps(ans2label, indent=1))
    (root / "nextqa" / "map_vid_vidorID.json").write_text(json.dumps(vid_map))
    (root / "DONE").write_text(json.dumps({"seed": seed, **sizes.__dict__}))
    return root
