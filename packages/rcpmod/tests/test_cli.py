"""The command line: demo smoke run, train/evaluate on a fixture file, bad input, torchrun."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from rcpmod.cli import main

TINY = ["--epochs", "2", "--hidden", "16", "--latent", "8", "--batch-size", "64",
        "--n-neighbors", "3", "--neg-rank", "5", "--seeds", "2", "--perms", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def scene_mat(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(1, 5, n)
    centres = rng.random((5, 6))
    x1 = centres[y] + 0.1 * rng.random((n, 6))
    x2 = np.tanh(centres[y] @ rng.random((6, 9))) + 0.1 * rng.random((n, 9))
    cell = np.empty((1, 2), dtype=object)
    cell[0, 0], cell[0, 1] = x1, x2
    d = tmp_path_factory.mktemp("data")
    scipy.io.savemat(d / "Scene-15.mat", {"X": cell, "Y": y[:, None]})
    return d


def test_train_then_evaluate(scene_mat, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "scene15", "--data", str(scene_mat), *TINY,
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    rec = json.loads((out / "rcpmod_train.json").read_text())
    assert rec["config"]["preset"] == "scene15" and rec["config"]["dtype"] == "float64"
    runs = rec["metrics"]["runs"]
    assert len(runs) == 2 and {r["seed"] for r in runs} == {1, 2}
    assert 0 <= rec["metrics"]["summary"]["RCPMOD"]["total"]["mean"] <= 1
    saved = np.load(out / "rcpmod_scores.npz")
    assert saved["scores"].shape == (2, 120)
    code = main(["evaluate", "--dataset", "scene15", "--data", str(scene_mat), "--seeds", "2",
                 "--perms", "1", "--baselines-backend", "builtin", "--out", str(out)])  # fmt: skip
    assert code == 0
    ev = json.loads((out / "rcpmod_evaluate.json").read_text())
    for r, t in zip(ev["metrics"]["runs"], runs):  # the saved scores give train's AUCs back
        assert r["RCPMOD"]["total"] == pytest.approx(t["RCPMOD"]["total"])
        assert set(r) >= {"KNN", "LOF", "IForest", "ECOD", "kNN-Jaccard"}


def test_train_bf16_on_cpu(tmp_path):
    code = main(["train", "--dataset", "wine", *TINY, "--seeds", "1", "--precision", "bf16",
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    rec = json.loads((tmp_path / "rcpmod_train.json").read_text())
    assert rec["config"]["dtype"] == "float32" and rec["config"]["precision"] == "bf16"


def test_demo_smoke(tmp_path, capsys):
    code = main(["demo", "--datasets", "wine", *TINY, "--seeds", "1", "--r5-dataset", "none",
                 "--baselines-backend", "builtin", "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "class_attribute" in text and "R6 determinism" in text
    rec = json.loads((tmp_path / "rcpmod_demo.json").read_text())
    assert rec["metrics"]["extra"]["determinism"]["identical"] is True
    assert set(rec["metrics"]["summary"]["wine"]) >= {"RCPMOD", "KNN", "s_con", "s_att"}
    assert (tmp_path / "rcpmod_demo_wine.png").is_file()


@pytest.mark.parametrize(
    "argv,match",
    [
        (["train", "--dataset", "scene15", "--data", "/nonexistent/x.mat"], "no such"),
        (["train", "--dataset", "wine", "--batch-size", "0"], "batch_size"),
        (["train", "--dataset", "wine", "--precision", "fp16", "--device", "cpu"], "CUDA"),
        (["train", "--dataset", "wine", "--impute", "mean"], "impute"),
        (["evaluate", "--dataset", "wine", "--scores", "/nonexistent.npz"], "no such"),
        (["demo", "--seeds", "0"], None),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(argv, match, tmp_path, capsys):
    out = tmp_path / "out"
    try:
        code = main([*argv, "--out", str(out)])
    except SystemExit as e:  # argparse errors exit 2 themselves
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    if match:
        assert match in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_corrupt_data_file_names_it(tmp_path, capsys):
    bad = tmp_path / "Scene-15.mat"
    bad.write_bytes(b"\x00" * 10)
    assert main(["train", "--dataset", "scene15", "--data", str(bad), "--out",
                 str(tmp_path / "o")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "Scene-15.mat" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.dist
def test_torchrun_two_processes_equal_single(tmp_path):
    """Runs are dealt to 2 gloo ranks; the gathered AUCs equal a single-process run exactly
    (float64, seeded), and only rank 0 writes."""
    argv = ["train", "--dataset", "wine", *TINY, "--seeds", "3", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "rcpmod.cli", *argv, "--out", str(one)], check=True,
                   env=env, capture_output=True, timeout=600)  # fmt: skip
    two = tmp_path / "two"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", "2", "-m", "rcpmod.cli", *argv, "--out", str(two)],
                   check=True, env=env, capture_output=True, timeout=600)  # fmt: skip
    a = json.loads((one / "rcpmod_train.json").read_text())
    b = json.loads((two / "rcpmod_train.json").read_text())
    assert b["world_size"] == 2
    ra = [r["RCPMOD"] for r in a["metrics"]["runs"]]
    rb = [r["RCPMOD"] for r in b["metrics"]["runs"]]
    assert ra == rb  # tolerance 0: each run is computed whole on one rank
    assert sorted(p.name for p in two.iterdir()) == ["rcpmod_scores.npz", "rcpmod_train.json"]
