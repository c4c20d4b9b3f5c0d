"""Distributed training and evaluation (labcore.dist): a split evaluation merges to the
single-process metrics exactly; torchrun with 2 CPU processes (gloo) trains the same model as
one process with the same global batch and seed; bf16 autocast trains on CPU."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dpcml import DPCML, DPCMLConfig, evaluate_ranking, make_multi_interest, split_per_user
from dpcml.cli import main
from dpcml.ranking import per_user_metrics, summarise_metrics


@pytest.fixture(scope="module")
def ratings_dat(tmp_path_factory):
    d = make_multi_interest(0, num_users=120, category_sizes=(40, 30, 25, 20), n_range=(8, 16))
    rows, cols = d.matrix.nonzero()
    lines = [f"{u + 1}::{i + 1}::5::97830000{k}" for k, (u, i) in enumerate(zip(rows, cols))]
    p = tmp_path_factory.mktemp("ml") / "ratings.dat"
    p.write_text("\n".join(lines) + "\n")
    return p


def _tiny_model():
    d = make_multi_interest(1, num_users=200, category_sizes=(40, 30, 20), n_range=(6, 14))
    split = split_per_user(d.matrix, seed=1234)
    torch.manual_seed(0)
    model = DPCML(*d.matrix.shape, DPCMLConfig(dim=8, n_vectors=3))
    model.project_users_()
    return model, split


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("convention", ["official", "standard"])
def test_split_evaluation_merges_to_the_single_process_metrics_exactly(world, convention):
    model, split = _tiny_model()
    ks = (1, 3, 5)
    whole = evaluate_ranking(model, split.train, split.test, ks, convention, chunk_size=32)
    users = np.flatnonzero(np.diff(split.test.indptr) > 0)
    # what each of `world` ranks computes (every world-th user, labcore.dist.shard), gathered
    parts = [per_user_metrics(model, split.train, split.test, ks, convention, users[r::world],
                              chunk_size=17)[1] for r in range(world)]  # fmt: skip
    merged = summarise_metrics(np.concatenate(parts[::-1]), ks)  # any order of the ranks
    assert merged == whole  # exact: fsum of the same per-user values


def _torchrun(argv, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "dpcml.cli", *argv]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.dist
def test_torchrun_two_processes_match_one_process(ratings_dat, tmp_path):
    # tolerance: parameters 1e-5 absolute (the two ranks' gradients are summed by all-reduce
    # in another order than one process sums them); metrics of one checkpoint: exact
    argv = ["train", "--data", str(ratings_dat), "--format", "ml1m", "--epochs", "2",
            "--dim", "8", "--n-vectors", "2", "--batch-size", "64", "--threads", "1",
            "--device", "cpu"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*argv, "--out", str(one)]) == 0
    proc = _torchrun([*argv, "--out", str(two)])
    assert proc.stdout.count("best epoch") == 1  # rank 1 prints nothing
    assert sorted(p.name for p in two.iterdir()) == ["dpcml_model.pt", "dpcml_train.json"]
    a = torch.load(one / "dpcml_model.pt", weights_only=True)["state_dict"]
    b = torch.load(two / "dpcml_model.pt", weights_only=True)["state_dict"]
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5, msg=name)
    r1 = json.loads((one / "dpcml_train.json").read_text())
    r2 = json.loads((two / "dpcml_train.json").read_text())
    assert r2["world_size"] == 2 and r1["world_size"] == 1
    assert r2["metrics"]["best_epoch"] == r1["metrics"]["best_epoch"]
    for h1, h2 in zip(r1["metrics"]["history"], r2["metrics"]["history"], strict=True):
        assert h2["loss"] == pytest.approx(h1["loss"], rel=1e-5)
    # distributed evaluation of the one-process checkpoint: the single-process numbers exactly
    ev = ["evaluate", "--checkpoint", str(one / "dpcml_model.pt"), "--threads", "1",
          "--device", "cpu", "--ks", "1", "3", "5"]  # fmt: skip
    assert main([*ev, "--out", str(tmp_path / "ev1")]) == 0
    _torchrun([*ev, "--out", str(tmp_path / "ev2")])
    m1 = json.loads((tmp_path / "ev1" / "dpcml_evaluate.json").read_text())["metrics"]
    m2 = json.loads((tmp_path / "ev2" / "dpcml_evaluate.json").read_text())["metrics"]
    assert m2 == m1


def test_bf16_trains_on_cpu_and_changes_no_op(ratings_dat, tmp_path):
    argv = ["train", "--data", str(ratings_dat), "--format", "ml1m", "--epochs", "1",
            "--dim", "8", "--n-vectors", "2", "--batch-size", "128", "--device", "cpu"]  # fmt: skip
    assert main([*argv, "--precision", "bf16", "--out", str(tmp_path / "bf16")]) == 0
    assert main([*argv, "--out", str(tmp_path / "fp32")]) == 0
    rec = json.loads((tmp_path / "bf16" / "dpcml_train.json").read_text())
    assert rec["config"]["precision"] == "bf16"
    a = torch.load(tmp_path / "fp32" / "dpcml_model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "bf16" / "dpcml_model.pt", weights_only=True)["state_dict"]
    for name in a:  # no op of the DPCML step is on autocast's lower-precision list
        assert torch.equal(a[name], b[name]), name
    ev = ["evaluate", "--checkpoint", str(tmp_path / "bf16" / "dpcml_model.pt"), "--device", "cpu"]
    assert main([*ev, "--precision", "bf16", "--out", str(tmp_path / "ev_bf16")]) == 0
    assert main([*ev, "--out", str(tmp_path / "ev_fp32")]) == 0
    m = [json.loads((tmp_path / d / "dpcml_evaluate.json").read_text())["metrics"]
         for d in ("ev_bf16", "ev_fp32")]  # fmt: skip
    assert m[0] == m[1]  # the scoring addmm is kept in fp32 under autocast


def test_fp16_on_cpu_is_a_one_line_error(ratings_dat, tmp_path, capsys):
    argv = ["train", "--data", str(ratings_dat), "--format", "ml1m", "--device", "cpu",
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert main([*argv, "--precision", "fp16"]) == 2
    assert "fp16 needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
