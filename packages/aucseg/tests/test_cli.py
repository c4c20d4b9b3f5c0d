import json

import numpy as np
import pytest
import torch
from PIL import Image

from aucseg import auc_loss
from aucseg.bench import bench_bank, bench_loss_scaling, pairwise_auc_loss
from aucseg.cli import main
from aucseg.demo import acceptance, covering_batch_size


def write_cityscapes(root, n=3, shape=(40, 60)):
    rng = np.random.default_rng(0)
    for i in range(n):
        stem = f"aachen_{i:06d}_000019"
        img = root / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png"
        for split in ("train", "val"):
            img = root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png"
            ann = root / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelTrainIds.png"
            img.parent.mkdir(parents=True, exist_ok=True)
            ann.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(img)
            lab = rng.integers(0, 19, shape, dtype=np.uint8)
            lab[:3] = 255
            Image.fromarray(lab).save(ann)


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aucseg: error: ")
    return err[0]


def test_bad_layout_and_missing_data_give_one_line(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--layout", "pascal"]) == 2
    assert "unknown layout 'pascal'" in one_error_line(capsys)
    assert main(["train", "--data", str(tmp_path / "nope"), "--layout", "ade20k"]) == 2
    assert "folder not found" in one_error_line(capsys)
    write_cityscapes(tmp_path, n=1)
    ckpt = tmp_path / "missing.pt"
    args = [
        "evaluate",
        "--data",
        str(tmp_path),
        "--layout",
        "cityscapes",
        "--checkpoint",
        str(ckpt),
    ]
    assert main(args) == 2
    assert "checkpoint not found" in one_error_line(capsys)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    args[-1] = str(tmp_path / "junk.pt")
    assert main(args) == 2
    assert "not a checkpoint" in one_error_line(capsys)


def test_train_then_evaluate_on_a_fixture(tmp_path, capsys):
    write_cityscapes(tmp_path)
    out = tmp_path / "run"
    common = ["--data", str(tmp_path), "--layout", "cityscapes", "--img-scale", "64", "32"]
    train_args = [
        "train",
        *common,
        "--iters",
        "2",
        "--batch-size",
        "2",
        "--crop",
        "32",
        "--threads",
        "1",
    ]
    assert main([*train_args, "--tail", "scan", "--num-head", "12", "--out", str(out)]) == 0
    rec = json.loads((out / "aucseg_train.json").read_text())
    assert rec["command"] == "train" and len(rec["config"]["tail"]) == 7
    ckpt = out / "model.pt"
    assert ckpt.is_file()
    assert main(["evaluate", *common, "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    rec = json.loads((out / "aucseg_evaluate.json").read_text())
    assert 0.0 <= rec["metrics"]["mIoU"] <= 1.0 and len(rec["metrics"]["per_class_IoU"]) == 19
    assert {"head_mIoU", "middle_mIoU", "tail_mIoU"} <= set(rec["metrics"])


def test_demo_end_to_end_tiny(tmp_path, capsys):
    args = [
        "demo",
        "--iters",
        "2",
        "--seeds",
        "0",
        "--n-train",
        "300",
        "--n-val",
        "16",
        "--threads",
        "1",
    ]
    assert main([*args, "--size", "64", "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "aucseg_demo.json").read_text())
    assert set(rec["metrics"]["mean"]) == {"ce", "ce+auc", "ce+auc+bank"}
    assert rec["metrics"]["data"]["small_index"] == [6, 7, 8, 9]
    assert len(rec["metrics"]["acceptance"]) == 6
    assert rec["memory"]["activation_bytes_b4"] < rec["memory"]["activation_bytes_bstar"]
    assert "ce+auc+bank" in capsys.readouterr().out


def test_covering_batch_size_matches_the_formula():
    q = [0.08, 0.05, 0.03, 0.02]
    b = covering_batch_size(q)
    assert np.prod(1 - (1 - np.array(q)) ** b) >= 0.9 > np.prod(1 - (1 - np.array(q)) ** (b - 1))
    assert covering_batch_size([1.0]) == 1
    with pytest.raises(ValueError):
        covering_batch_size([0.1, 0.0])


def test_pairwise_reference_and_scaling_bench():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64)
    target = torch.randint(5, (2, 6, 7), generator=g)
    target[0, 0] = 255
    torch.testing.assert_close(pairwise_auc_loss(logits, target), auc_loss(logits, target))
    res = bench_loss_scaling([256, 512], brute_max=512, num_classes=5, repeats=1)
    assert len(res["rows"]) == 2 and res["rows"][1]["pairwise_saved_bytes"] > 0
    # saved-for-backward bytes: linear for the closed form, quadratic for all pairs
    assert 0.8 < res["closed_form_bytes_slope"] < 1.2 and 1.7 < res["pairwise_bytes_slope"] < 2.2
    b = bench_bank((64, 64), "cityscapes", n_calls=3)
    assert b["stored"] == 35 and b["host_bytes_crops"] < b["host_bytes_whole_images"]


def test_acceptance_reports_met_and_missed():
    mem = {"activation_bytes_b4": 10, "activation_bytes_bstar": 100}
    row = {"mIoU": 50.0, "tail_mIoU": 10.0, "tail_coverage": 0.1}
    mean = {
        "ce": row,
        "ce+auc": {**row, "tail_mIoU": 12.0},
        "ce+auc+bank": {**row, "mIoU": 48.5, "tail_mIoU": 15.5, "tail_coverage": 0.95},
    }
    acc = acceptance(mean, mem)
    met = {k: v["met"] for k, v in acc.items()}
    assert met == {
        "tail(c) >= tail(a) + 5.0": True,
        "mIoU(c) >= mIoU(a) - 1.0": False,
        "tail(b) between tail(a) and tail(c)": True,
        "coverage(c, B=4) >= 0.9": True,
        "coverage(a, B=4) <= 0.3": True,
        "activations(c, B=4) <= 0.35 x activations(d, B*)": True,
    }
    assert acc["mIoU(c) >= mIoU(a) - 1.0"]["threshold"] == 49.0
    only_c = acceptance({"ce+auc+bank": mean["ce+auc+bank"]}, {**mem, "activation_bytes_b4": 40})
    assert set(only_c) == {
        "coverage(c, B=4) >= 0.9",
        "activations(c, B=4) <= 0.35 x activations(d, B*)",
    }
    assert not only_c["activations(c, B=4) <= 0.35 x activations(d, B*)"]["met"]
