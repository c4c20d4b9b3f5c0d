"""The command line: train / evaluate on written fixtures, bad input, precision, torchrun."""

import json
import os
import subprocess
import sys

import pytest

from dsa_ensemble.cli import main

TINY = [
    "--backbone",
    "small_cnn",
    "--adapter-widths",
    "8",
    "--heads",
    "3",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--bn-momentum",
    "0.1",
    "--ema-decay",
    "0.9",
    "--threads",
    "1",
]


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dsa_ensemble: error:")
    return err[0]


def test_train_then_evaluate_on_cifar_pickles(cifar10, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", str(cifar10), "--out", str(out), "--val-fraction", "0.2",
                 *TINY]) == 0  # fmt: skip
    rec = json.loads((out / "dsa_ensemble_train.json").read_text())
    test = rec["metrics"]["test"]
    assert set(test) == {"sigma=0.0", "sigma=0.3"} and test["sigma=0.0"]["n"] == 6
    assert len(test["sigma=0.0"]["per_head_accuracy"]) == 3
    assert (out / "dsa_ensemble_model.pt").is_file()
    ev = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(out / "dsa_ensemble_model.pt"), "--data",
                 str(cifar10), "--out", str(ev), "--corruption", "0"]) == 0  # fmt: skip
    m = json.loads((ev / "dsa_ensemble_evaluate.json").read_text())["metrics"]["sigma=0.0"]
    # the checkpoint holds the selected EMA model: evaluate reproduces train's test numbers
    assert m["accuracy"] == pytest.approx(test["sigma=0.0"]["accuracy"])
    assert m["nll"] == pytest.approx(test["sigma=0.0"]["nll"], rel=1e-5)


def test_ssl_train_on_image_folder_with_a_timm_backbone(image_folder, tmp_path):
    out = tmp_path / "ssl"
    args = ["train", "--data", str(image_folder), "--format", "imagefolder", "--ssl",
            "--labels-per-class", "1", "--out", str(out), "--val-fraction", "0", *TINY,
            "--backbone", "resnet18", "--mu", "1", "--steps-per-epoch", "2",
            "--batch-size", "2"]  # fmt: skip
    assert main(args) == 0
    rec = json.loads((out / "dsa_ensemble_train.json").read_text())
    assert rec["config"]["backbone"] == "resnet18" and rec["config"]["ssl"] is True
    assert "mask_rate" in rec["metrics"]["pseudo_labels"]


def test_bf16_trains_and_fp16_on_cpu_is_rejected(cifar10, tmp_path, capsys):
    out = tmp_path / "bf16"
    assert main(["train", "--data", str(cifar10), "--out", str(out), "--precision", "bf16",
                 "--val-fraction", "0", *TINY]) == 0  # fmt: skip
    rec = json.loads((out / "dsa_ensemble_train.json").read_text())
    assert rec["config"]["precision"] == "bf16"
    capsys.readouterr()
    bad = tmp_path / "fp16"
    assert main(["train", "--data", str(cifar10), "--out", str(bad), "--device", "cpu",
                 "--precision", "fp16", *TINY]) == 2  # fmt: skip
    assert "fp16" in _err(capsys) and not bad.exists()


@pytest.mark.parametrize("case", ["corrupt_pickle", "empty_folder", "sizes", "backbone",
                                  "missing", "bad_config"])  # fmt: skip
def test_bad_input_is_one_line_exit_2_nothing_written(case, cifar10, image_folder, tmp_path,
                                                      capsys):  # fmt: skip
    out = tmp_path / "never"
    args = ["train", "--data", str(cifar10), "--out", str(out), *TINY]
    if case == "corrupt_pickle":
        (cifar10 / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"junk")
    elif case == "empty_folder":
        (image_folder / "train" / "cow").mkdir()
        args[2], args[5:5] = str(image_folder), ["--format", "imagefolder"]
    elif case == "sizes":
        from PIL import Image

        Image.new("RGB", (9, 9)).save(image_folder / "train" / "cat" / "odd.png")
        args[2], args[5:5] = str(image_folder), ["--format", "imagefolder"]
    elif case == "backbone":
        args += ["--backbone", "resnet_does_not_exist"]
    elif case == "missing":
        args[2] = str(tmp_path / "nowhere")
    else:
        args += ["--head-bn", "both"]
    assert main(args) == 2
    _err(capsys)
    assert not out.exists()


def test_evaluate_rejects_mismatched_images(cifar10, image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(cifar10), "--out", str(out), "--val-fraction", "0",
                 *TINY]) == 0  # fmt: skip
    capsys.readouterr()
    ev = tmp_path / "ev"
    code = main(["evaluate", "--checkpoint", str(out / "dsa_ensemble_model.pt"), "--data",
                 str(image_folder), "--format", "imagefolder", "--out", str(ev)])  # fmt: skip
    assert code == 2 and "trained on" in _err(capsys) and not ev.exists()


def test_bench_accepts_quick():
    from dsa_ensemble.cli import _parser

    assert _parser().parse_args(["bench", "--quick"]).quick is True


@pytest.mark.dist
def test_torchrun_two_processes_match_one(cifar10, tmp_path):
    """2 gloo ranks x 2 images = one process x 4 images: the same global batches and draws.

    Tolerance: BN statistics are per rank on CPU (no SyncBatchNorm), so the runs are not
    bit-equal; the epoch-0 training loss must agree within 5 % and test accuracy within 1/6
    (one of the 6 fixture test images).
    """
    common = ["train", "--data", str(cifar10), "--val-fraction", "0", *TINY, "--head-type", "mhe"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*common, "--out", str(one)]) == 0  # the single process, in this one
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", "-m", "dsa_ensemble.cli", *common, "--out",
                        str(two)], env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    a = json.loads((one / "dsa_ensemble_train.json").read_text())
    b = json.loads((two / "dsa_ensemble_train.json").read_text())
    assert sorted(p.name for p in two.iterdir()) == [
        "dsa_ensemble_model.pt",
        "dsa_ensemble_train.json",
    ]
    assert b["config"]["world_size"] == 2
    la, lb = a["metrics"]["history"][0]["train_loss"], b["metrics"]["history"][0]["train_loss"]
    assert lb == pytest.approx(la, rel=0.05)
    acc_a = a["metrics"]["test"]["sigma=0.0"]["accuracy"]
    acc_b = b["metrics"]["test"]["sigma=0.0"]["accuracy"]
    assert abs(acc_a - acc_b) <= 1 / 6 + 1e-9
    assert b["metrics"]["test"]["sigma=0.0"]["n"] == 6  # gathered from both ranks
