"""The command line: train and evaluate on a tiny ratings.dat, demo smoke run, bad input."""

import json

import numpy as np
import pytest
import torch

from dpcml.cli import main
from dpcml.synthetic import make_multi_interest


@pytest.fixture(scope="module")
def ratings_dat(tmp_path_factory):
    d = make_multi_interest(0, num_users=120, category_sizes=(40, 30, 25, 20), n_range=(8, 16))
    rng = np.random.default_rng(0)
    rows, cols = d.matrix.nonzero()
    lines = [f"{u + 1}::{i + 1}::{rng.integers(4, 6)}::9783000{k}"
             for k, (u, i) in enumerate(zip(rows, cols))]  # fmt: skip
    noise = [f"{u + 1}::{i + 1}::2::1" for u, i in zip(rng.integers(0, 120, 50),
                                                     rng.integers(0, 100, 50))]  # fmt: skip
    p = tmp_path_factory.mktemp("ml") / "ratings.dat"
    p.write_text("\n".join(lines + noise) + "\n")
    return p


def test_train_then_evaluate(ratings_dat, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(ratings_dat), "--format", "ml1m", "--epochs", "2",
            "--dim", "8", "--n-vectors", "2", "--batch-size", "512"]  # fmt: skip
    code = main([*argv, "--out", str(out)])
    assert code == 0
    record = json.loads((out / "dpcml_train.json").read_text())
    assert record["package"] == "dpcml" and record["command"] == "train"
    assert 0 <= record["metrics"]["test"]["P@3"] <= 1
    assert record["config"]["n_vectors"] == 2 and record["config"]["id_mode"] == "raw"
    ckpt = torch.load(out / "dpcml_model.pt", weights_only=True)
    table = np.array([line.split("::") for line in ratings_dat.read_text().split()], dtype=int)
    assert ckpt["shape"][1] == table[table[:, 2] >= 4, 1].max() + 1  # raw MovieIDs: max id + 1
    code = main(["evaluate", "--checkpoint", str(out / "dpcml_model.pt"), "--out", str(out),
                 "--convention", "standard"])  # fmt: skip
    assert code == 0
    ev = json.loads((out / "dpcml_evaluate.json").read_text())
    assert ev["metrics"]["convention"] == "standard"
    assert ev["metrics"]["n_users"] == 120


def test_demo_smoke(tmp_path, capsys):
    code = main(["demo", "--arms", "CML-hard", "DPCML-hard", "--epochs", "1", "--seeds", "1",
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "minority_hard" in text and ("met" in text or "MISSED" in text)
    record = json.loads((tmp_path / "dpcml_demo.json").read_text())
    assert set(record["metrics"]["mean"]) == {"CML-hard", "DPCML-hard"}


@pytest.mark.parametrize(
    "argv,match",
    [
        (["train", "--data", "{bad}", "--format", "ml1m"], "not a MovieLens ratings.dat"),
        (["train", "--data", "{missing}", "--format", "ml100k"], "no such file"),
        (["train", "--data", "{bad}", "--format", "users_dat"], "users.dat"),
        (["evaluate", "--checkpoint", "{bad}"], "not a dpcml checkpoint"),
        (["demo", "--arms", "nope"], "unknown arms"),
        (["train", "--data", "{good}", "--format", "ml1m", "--sampling", "random"], "sampling"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, ratings_dat, capsys, argv, match):
    bad = tmp_path / "bad.dat"
    bad.write_text("this is not a data file\n")
    paths = {"bad": bad, "missing": tmp_path / "missing.dat", "good": ratings_dat}
    argv = [a.format(**paths) for a in argv]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dpcml: error:") and match in err
    assert len(err.splitlines()) == 1
