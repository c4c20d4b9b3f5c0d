"""Loaders on the generated fixture: formats, grouping, MC expansion, bad input, resampling."""

import json

import numpy as np
import pytest
import torch

from heurvidqa import synthetic as syn
from heurvidqa.data import CaptionSet, FrameSource, MsrvttQA, NextQA, caption_batch, qa_batch
from labcore.cli import UserError
from labcore.video import VideoDecodeError, decode_all


def test_movingshapes_round_trip_through_loaders(shapes_root):
    a2l = shapes_root / "msrvtt" / "train_ans2label.json"
    tr = MsrvttQA(shapes_root / "msrvtt" / "train.jsonl", a2l, shapes_root / "videos", train=True)
    vmap = shapes_root / "nextqa" / "map_vid_vidorID.json"
    mc = NextQA(shapes_root / "nextqa" / "test.csv", vmap, shapes_root)  # fmt: skip
    msvd = MsrvttQA(shapes_root / "msvd" / "val.jsonl", a2l, shapes_root / "msvd" / "videos",
                    ext=".avi")  # fmt: skip
    assert len(tr) == 25 and len(mc) == 10 and len(msvd) == 10
    assert {e.answer_type for e in tr.examples} == {"what", "where", "how"}
    assert all(len(e.candidates) == 5 and e.candidates[e.label] == e.answer for e in mc.examples)
    assert {e.answer_type for e in mc.examples} <= {"DO", "DL", "TN", "TP"}
    # decoded frames match the renderer: the target's interior colour within 25/255
    metas = [json.loads(x) for x in (shapes_root / "meta" / "val.jsonl").read_text().splitlines()]
    for m, path in ((metas[0], msvd.examples[0].path),
                    (metas[0], shapes_root / "videos" / "val00000.mp4")):  # fmt: skip
        frames = decode_all(path)
        _, tmask, _ = syn.render_clip(m)
        assert frames.shape == (16, 64, 64, 3)
        inner = tmask[5].copy()
        for _ in range(2):  # erode twice: interior pixels only (chroma bleeds at the edges)
            inner[1:-1, 1:-1] &= (inner[:-2, 1:-1] & inner[2:, 1:-1] & inner[1:-1, :-2]
                                  & inner[1:-1, 2:])  # fmt: skip
        got = frames[5][inner].astype(float).mean(0)
        assert np.abs(got - np.array(syn.COLOURS[m["colour"]])).max() <= 25


def test_group_by_video_and_texts(shapes_root):
    a2l = shapes_root / "msrvtt" / "train_ans2label.json"
    tr = MsrvttQA(shapes_root / "msrvtt" / "train.jsonl", a2l, shapes_root / "videos")
    assert sorted(i for g in tr.groups() for i in g) == list(range(25))
    assert len(tr.texts()) == 50


def test_qa_batch_open_ended_and_multiple_choice(shapes_root, tokenizer):
    a2l = shapes_root / "msrvtt" / "train_ans2label.json"
    tr = MsrvttQA(shapes_root / "msrvtt" / "train.jsonl", a2l, shapes_root / "videos")
    src = FrameSource(64)
    rng = np.random.default_rng(0)
    b = qa_batch(tr.examples[:3], src, tokenizer, 8, "rand", rng)
    assert b["pixels"].shape == (3, 8, 3, 64, 64) and b["num_candidates"] == 0
    assert b["labels"].tolist() == [a2l_i for a2l_i in (tr.ans2label[e.answer]
                                                        for e in tr.examples[:3])]  # fmt: skip
    mc = NextQA(shapes_root / "nextqa" / "train.csv",
                shapes_root / "nextqa" / "map_vid_vidorID.json", shapes_root)  # fmt: skip
    b = qa_batch(mc.examples[:2], src, tokenizer, 8, "uniform", rng)
    assert b["ids"].shape[0] == 10 and b["num_candidates"] == 5
    text = tokenizer.decode(b["ids"][6], skip_special_tokens=False)
    assert text.startswith("[CLS] " + mc.examples[1].question.lower().rstrip("?")) \
        and mc.examples[1].candidates[1] in text.split("[SEP]")[1]  # fmt: skip
    # cached frames give the same clip as a fresh decode with the same indices
    fresh = FrameSource(64, cache=False).clip(tr.examples[0].path, 8, "uniform", rng)
    torch.testing.assert_close(src.clip(tr.examples[0].path, 8, "uniform", rng), fresh)


def test_undecodable_video_is_resampled_then_reported(shapes_root, tokenizer, tmp_path):
    a2l = shapes_root / "msrvtt" / "train_ans2label.json"
    tr = MsrvttQA(shapes_root / "msrvtt" / "train.jsonl", a2l, shapes_root / "videos")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 500)
    import dataclasses

    broken = dataclasses.replace(tr.examples[0], path=bad)
    with pytest.warns(UserWarning, match="drawing another"):
        b = qa_batch([broken], FrameSource(64), tokenizer, 8, "rand", np.random.default_rng(0),
                     pool=tr.examples[1:])  # fmt: skip
    assert b["pixels"].shape[0] == 1 and b["examples"][0].path != bad
    with pytest.raises(VideoDecodeError, match=r"bad\.mp4"), pytest.warns(UserWarning):
        qa_batch([broken], FrameSource(64), tokenizer, 8, "rand", np.random.default_rng(0),
                 pool=[broken])  # fmt: skip


def test_bad_annotations(shapes_root, tmp_path):
    a2l = shapes_root / "msrvtt" / "train_ans2label.json"
    vids = shapes_root / "videos"
    with pytest.raises(FileNotFoundError):
        MsrvttQA(tmp_path / "missing.jsonl", a2l, vids)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="empty"):
        MsrvttQA(empty, a2l, vids)
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"video_id": "train00000", "question": "q?", "answer": "zebra"}))
    with pytest.raises(UserError, match="zebra"):
        MsrvttQA(odd, a2l, vids, train=True)
    assert MsrvttQA(odd, a2l, vids).examples[0].label == -1  # evaluation: counted wrong
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(UserError, match="not valid JSON"):
        MsrvttQA(broken, a2l, vids)
    with pytest.raises(FileNotFoundError):
        NextQA(shapes_root / "nextqa" / "val.csv", tmp_path / "nomap.json", shapes_root)
    with pytest.raises(UserError, match="captions"):
        (tmp_path / "c.jsonl").write_text("")
        CaptionSet(tmp_path / "c.jsonl", vids)


def test_caption_batch(shapes_root, tokenizer):
    caps = CaptionSet(shapes_root / "captions.jsonl", shapes_root / "captions")
    b = caption_batch(caps.items[:4], FrameSource(64), tokenizer, 4, "headtail",
                      np.random.default_rng(0))  # fmt: skip
    assert b["pixels"].shape == (4, 4, 3, 64, 64) and b["ids"].shape[0] == 4
    assert all(c for c in b["captions"])
