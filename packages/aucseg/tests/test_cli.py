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


# ---- bad input: one line naming the problem, exit code 2, nothing written ----------------------


def write_ade(root, n=2, shape=(24, 32)):
    """A tiny ADE20K layout (train and val); returns the training (image, label) paths."""
    rng = np.random.default_rng(1)
    base = root / "ADEChallengeData2016"
    paths = []
    for split, sub in (("train", "training"), ("val", "validation")):
        for i in range(n):
            img = base / "images" / sub / f"ADE_{split}_{i:08d}.jpg"
            ann = base / "annotations" / sub / f"ADE_{split}_{i:08d}.png"
            img.parent.mkdir(parents=True, exist_ok=True)
            ann.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(img)
            Image.fromarray(rng.integers(0, 151, shape, dtype=np.uint8)).save(ann)
            if split == "train":
                paths.append((img, ann))
    return paths


def ade_train(root, out, *extra):
    return [
        "train",
        "--data",
        str(root),
        "--layout",
        "ade20k",
        "--iters",
        "1",
        "--batch-size",
        "2",
        "--crop",
        "16",
        "--img-scale",
        "32",
        "24",
        "--threads",
        "1",
        "--backbone",
        "resnet10t",
        "--out",
        str(out),
        *extra,
    ]


def nothing_written(out):
    return not out.exists() or not any(out.iterdir())


def _corrupt(img, ann):
    img.write_bytes(b"\x00\x01 this is not a JPEG" * 10)
    return img


def _empty(img, ann):
    img.write_bytes(b"")
    return img


def _truncated_image(img, ann):
    data = img.read_bytes()
    img.write_bytes(data[: len(data) - 300])  # the header survives, the pixel data does not
    return img


def _truncated_label(img, ann):
    data = ann.read_bytes()
    ann.write_bytes(data[: len(data) - 30])
    return ann


def _sixteen_bit_image(img, ann):
    h, w = np.asarray(Image.open(ann)).shape
    Image.fromarray(np.full((h, w), 40000, dtype=np.uint16)).save(img, format="PNG")
    return img


def _rgb_label(img, ann):
    lab = np.asarray(Image.open(ann))
    Image.fromarray(np.stack([lab] * 3, -1)).save(ann)
    return ann


def _label_wrong_size(img, ann):
    Image.fromarray(np.zeros((10, 12), dtype=np.uint8)).save(ann)
    return ann


BAD_FILES = {
    "corrupt image": (_corrupt, "not a readable image (UnidentifiedImageError)"),
    "empty image": (_empty, "is an empty file"),
    "truncated image": (_truncated_image, "truncated or corrupt"),
    "truncated label": (_truncated_label, "truncated or corrupt"),
    "16-bit image": (_sixteen_bit_image, "has mode I;16; expected an 8-bit image"),
    "RGB label": (_rgb_label, "has mode RGB; expected an 8-bit single-channel PNG"),
    "label of the wrong size": (_label_wrong_size, "is 12x10 but its image"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_in_the_ade20k_layout_give_one_line_naming_the_file(tmp_path, capsys, case):
    damage, message = BAD_FILES[case]
    pairs = write_ade(tmp_path / "data")
    bad = damage(*pairs[1])
    out = tmp_path / "out"
    assert main(ade_train(tmp_path / "data", out)) == 2
    line = one_error_line(capsys)
    assert str(bad) in line and message in line, line
    assert nothing_written(out)


def test_a_truncated_image_in_a_dataloader_worker_is_still_one_line(tmp_path, capsys):
    pairs = write_ade(tmp_path / "data")
    bad = _truncated_image(*pairs[0])
    _truncated_image(*pairs[1])
    out = tmp_path / "out"
    assert main(ade_train(tmp_path / "data", out, "--num-workers", "1")) == 2
    line = one_error_line(capsys)
    assert str(bad.parent) in line and "truncated or corrupt" in line, line
    assert nothing_written(out)


def test_a_corrupt_validation_image_fails_evaluate_in_one_line(tmp_path, capsys):
    write_ade(tmp_path / "data")
    out = tmp_path / "run"
    assert main(ade_train(tmp_path / "data", out)) == 0
    val = tmp_path / "data/ADEChallengeData2016/images/validation/ADE_val_00000001.jpg"
    val.write_bytes(b"GIF89a broken")
    ev = tmp_path / "ev"
    args = ["evaluate", "--data", str(tmp_path / "data"), "--layout", "ade20k"]
    assert main([*args, "--checkpoint", str(out / "model.pt"), "--out", str(ev)]) == 2
    line = one_error_line(capsys)
    assert str(val) in line and "not a readable image" in line
    assert nothing_written(ev)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--iters", "0", "must be an integer >= 1, got 0"),
        ("--batch-size", "0", "must be an integer >= 1, got 0"),
        ("--crop", "0", "must be an integer >= 1, got 0"),
        ("--lr", "0", "must be a number > 0, got 0"),
        ("--lr", "-1e-4", "must be a number > 0, got -1e-4"),
        ("--lr", "nan", "must be a number > 0, got nan"),
        ("--lr", "fast", "expected a number > 0, got 'fast'"),
        ("--p-sample", "1.5", "must be a number in [0, 1], got 1.5"),
        ("--memory-size", "0", "must be an integer >= 1, got 0"),
        ("--num-workers", "-1", "must be an integer >= 0, got -1"),
    ],
)
def test_out_of_range_numbers_are_rejected_before_any_work(tmp_path, capsys, flag, value, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(ade_train(tmp_path / "no-data", out, f"{flag}={value}"))
    assert exc.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}: {message}" in last, last
    assert nothing_written(out)


def test_config_file_values_are_validated_like_flags(tmp_path, capsys):
    from aucseg import TrainConfig
    from labcore.cli import UserError

    write_ade(tmp_path / "data")
    for bad in ({"iters": 0}, {"lr": -1.0}, {"batch_size": 0}, {"crop": 0}):
        cfg = tmp_path / "bad.json"
        cfg.write_text(json.dumps(bad))
        out = tmp_path / "out"
        args = ade_train(tmp_path / "data", out)
        for key in ("--iters", "--batch-size", "--crop"):  # let the config file set them
            i = args.index(key)
            del args[i : i + 2]
        # labcore checks a config value like its flag (argparse: usage, then one error line)
        with pytest.raises(SystemExit) as exit_:
            main([*args, "--config", str(cfg)])
        assert exit_.value.code == 2, bad
        line = capsys.readouterr().err.strip().splitlines()[-1]
        flag = "--" + next(iter(bad)).replace("_", "-")
        assert line.startswith("aucseg train: error: ") and flag in line and "must be" in line, line
        assert nothing_written(out)
    with pytest.raises(UserError, match="iters must be an integer >= 1"):
        TrainConfig(iters=0)
    with pytest.raises(UserError, match="lr must be a finite number > 0"):
        TrainConfig(lr=float("inf"))
    with pytest.raises(UserError, match="ova_reduction"):
        TrainConfig(auc={"transform": "ova", "ova_reduction": "max"})


def test_every_flag_has_help_text_and_shows_its_default():
    import argparse

    from aucseg.cli import _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if action.option_strings and action.dest not in ("help", "device", "seed"):
                assert action.help and action.help.strip(), (name, action.option_strings)
        text = parser.format_help()
        assert "(default:" in text, name
    train_help = sub.choices["train"].format_help()
    for flag in ("--iters", "--batch-size", "--crop", "--lr"):
        assert flag in train_help
    assert "default: 160000" in train_help and "default: 6e-05" in train_help
