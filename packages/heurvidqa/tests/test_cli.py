"""The command line on the fixture: train → evaluate, bf16, torchrun, bad input."""

import json
import os
import subprocess
import sys
import warnings

import pytest

from heurvidqa.cli import main

TINY = ["--size", "cpu", "--text-model", "tiny", "--num-frames", "4"]


def _data(root, split="train"):
    return ["--format", "msrvtt", "--video-dir", str(root / "videos"),
            "--ans2label", str(root / "msrvtt" / "train_ans2label.json")]  # fmt: skip


def _train_args(root, out, *extra):
    return ["train", *_data(root), "--train-file", str(root / "msrvtt" / "train.jsonl"),
            "--eval-file", str(root / "msrvtt" / "val.jsonl"), *TINY, "--steps", "2",
            "--batch-size", "4", "--out", str(out), "--seed", "0", *extra]  # fmt: skip


def test_train_then_evaluate(shapes_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(shapes_root, out)) == 0
    res = json.loads((out / "heurvidqa_train.json").read_text())
    assert 0 <= res["metrics"]["eval"]["accuracy"] <= 100
    assert "lambda_entity" in res["config"]["reconstructions"]
    ev = tmp_path / "ev"
    assert main(["evaluate", *_data(shapes_root), "--eval-file",
                 str(shapes_root / "msrvtt" / "val.jsonl"), "--checkpoint",
                 str(out / "student.pt"), "--out", str(ev)]) == 0  # fmt: skip
    rep = json.loads((ev / "heurvidqa_evaluate.json").read_text())["metrics"]
    assert rep["accuracy"] == res["metrics"]["eval"]["accuracy"]
    assert sum(n for k, (h, n) in rep["counts"].items() if k != "all") == 10


def test_prepare_vocab_prompter_and_heuristic_training(shapes_root, tmp_path):
    voc = tmp_path / "voc"
    assert main(["prepare-vocab", *_data(shapes_root), "--eval-file",
                 str(shapes_root / "msrvtt" / "train.jsonl"), "--min-count", "1",
                 "--out", str(voc)]) == 0  # fmt: skip
    vocab = json.loads((voc / "vocab.json").read_text())
    assert "circle" in vocab["entities"] and vocab["actions"]
    pr = tmp_path / "pr"
    assert main(["train-prompter", "--captions", str(shapes_root / "captions.jsonl"),
                 "--video-dir", str(shapes_root / "captions"), "--text-model", "tiny",
                 "--num-frames", "4", "--steps", "2", "--batch-size", "4", "--name", "entity",
                 "--out", str(pr)]) == 0  # fmt: skip
    out = tmp_path / "heur"
    assert main(_train_args(shapes_root, out, "--use-entity", "--use-action", "--vocab",
                            str(voc / "vocab.json"), "--entity-prompter",
                            str(pr / "entity.pt"))) == 0  # fmt: skip
    losses = json.loads((out / "heurvidqa_train.json").read_text())["metrics"]["final_losses"]
    assert {"qa", "entity", "action"} <= set(losses)


def test_bf16_trains_on_cpu(shapes_root, tmp_path):
    out = tmp_path / "bf16"
    assert main(_train_args(shapes_root, out, "--precision", "bf16")) == 0
    res = json.loads((out / "heurvidqa_train.json").read_text())
    assert res["config"]["precision"] == "bf16"
    loss = res["metrics"]["final_losses"]["qa"]
    assert loss == loss and 0 < loss < 20  # finite


def _fails(argv, capsys, out, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
    assert not out.exists() or not any(out.iterdir())


def test_bad_input_one_line_exit_2(shapes_root, tmp_path, capsys):
    out = tmp_path / "never"
    args = _train_args(shapes_root, out)
    i = args.index("--train-file")
    missing = [*args[: i + 1], str(tmp_path / "nope.jsonl"), *args[i + 2 :]]
    _fails(missing, capsys, out, "nope.jsonl")
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"video_id": "train00000", "question": "q?", "answer": "zebra"}))
    _fails([*args[: i + 1], str(odd), *args[i + 2 :]], capsys, out, "zebra")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    _fails([*args[: i + 1], str(empty), *args[i + 2 :]], capsys, out, "empty")
    vids = tmp_path / "badvids"
    vids.mkdir()
    for line in (shapes_root / "msrvtt" / "train.jsonl").read_text().splitlines():
        (vids / f"{json.loads(line)['video_id']}.mp4").write_bytes(b"\x00" * 100)
    j = args.index("--video-dir")
    k = args.index("--eval-file")
    bad = [*args[: j + 1], str(vids), *args[j + 2 : k], *args[k + 2 :]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the resampling warnings before the final error
        _fails(bad, capsys, out, "cannot open video")
    _fails(["evaluate", *_data(shapes_root), "--eval-file", str(odd), "--checkpoint",
            str(tmp_path / "none.pt"), "--out", str(out)], capsys, out, "none.pt")  # fmt: skip
    _fails(
        [
            "train",
            *_data(shapes_root),
            "--train-file",
            str(shapes_root / "msrvtt" / "train.jsonl"),
            *TINY,
            "--use-entity",
            "--out",
            str(out),
        ],
        capsys,
        out,
        "--vocab",
    )


@pytest.mark.dist
def test_torchrun_two_processes_match_single(shapes_root, tmp_path):
    """2 gloo processes with global batch 4 = 1 process with batch 4 (same data, same seed)."""
    single = tmp_path / "single"
    assert main(_train_args(shapes_root, single, "--text-dropout", "0")) == 0
    multi = tmp_path / "multi"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "heurvidqa.cli",
        *_train_args(shapes_root, multi, "--text-dropout", "0"),
        "--threads",
        "1",
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    b = json.loads((multi / "heurvidqa_train.json").read_text())["metrics"]
    assert b["eval"]["counts"]["all"][1] == 10
    # the final-step QA loss: rank 0's half of the batch vs the whole batch, so compare the
    # trained weights instead (through the evaluation accuracy) and the loss loosely
    import torch

    sa = torch.load(single / "student.pt", weights_only=False)["state_dict"]
    sb = torch.load(multi / "student.pt", weights_only=False)["state_dict"]
    diff = max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)
    assert diff < 1e-4, diff
    assert len(list(multi.glob("*.json"))) == 1
