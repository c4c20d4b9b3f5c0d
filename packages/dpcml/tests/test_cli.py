"""The command line: train and evaluate on a tiny ratings.dat, demo smoke run, bad input."""

import json

import numpy as np
import pytest
import torch

from dpcml import DPCML, DPCMLConfig, fit
from dpcml.cli import main
from dpcml.synthetic import make_multi_interest
from labcore.cli import UserError


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
    code = main(["demo", "--arms", "CML-hard", "DPCML-hard", "--steps", "1", "--seeds", "1",
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "minority_hard" in text and ("met" in text or "MISSED" in text)
    record = json.loads((tmp_path / "dpcml_demo.json").read_text())
    assert set(record["metrics"]["mean"]) == {"CML-hard", "DPCML-hard"}
    assert record["metrics"]["per_seed"]["CML-hard"][0]["epochs"] == 1
    assert (tmp_path / "dpcml_demo_minority_recall.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "argv,match",
    [
        (["train", "--data", "{bad}", "--format", "ml1m"], "not a MovieLens ratings.dat"),
        (["train", "--data", "{missing}", "--format", "ml100k"], "no such file"),
        (["train", "--data", "{bad}", "--format", "users_dat"], "users.dat"),
        (["evaluate", "--checkpoint", "{bad}"], "not a dpcml checkpoint"),
        (
            ["train", "--data", "{good}", "--format", "ml1m", "--config", "{ks0}"],
            "ks must be integers >= 1, got [0]",
        ),
        (
            ["train", "--data", "{dir}", "--format", "ml1m"],
            "is a directory: expected the MovieLens ratings.dat file itself, e.g.",
        ),
        (["train", "--data", "{binary}", "--format", "ml1m"], "not UTF-8 text: byte 0xff"),
        (["train", "--data", "{binary}", "--format", "ml20m"], "not UTF-8 text"),
        (["train", "--data", "{binary}", "--format", "steam"], "not UTF-8 text"),
        (["train", "--data", "{binary}", "--format", "users_dat"], "not UTF-8 text"),
        (["train", "--data", "{empty}", "--format", "ml1m"], "empty MovieLens ratings.dat"),
        (["train", "--data", "{empty}", "--format", "users_dat"], "empty users.dat"),
        (["train", "--data", "{truncated}", "--format", "ml1m"], "or truncated"),
        (["train", "--data", "{header_only}", "--format", "ml20m"], "header but no rows"),
        (["train", "--data", "{fractional}", "--format", "ml100k"], "non-negative integers"),
        (["train", "--data", "{truncated_users}", "--format", "users_dat"], "(truncated?)"),
        (["train", "--data", "{truncated_steam}", "--format", "steam"], "fewer than 4 fields"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, ratings_dat, capsys, argv, match):
    files = {"bad": b"this is not a data file\n", "binary": b"\xff\xfe\x00ab\x81\n", "empty": b"",
             "truncated": b"1::2::5::978300760\n1::3::4::97830\n2::4",
             "header_only": b"userId,movieId,rating,timestamp\n",
             "fractional": b"1\t2\t5\t1\n1\t2.5\t5\t1\n", "truncated_users": b"3 1 2 3\n4 1 2",
             "truncated_steam": b'1,"a",purchase,1.0,0\n1,"a",play',
             "ks0": b'{"ks": [0]}'}  # fmt: skip
    paths = {"missing": tmp_path / "missing.dat", "good": ratings_dat, "dir": tmp_path / "ml-1m"}
    paths["dir"].mkdir()
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}.dat"
        paths[name].write_bytes(content)
    argv = [a.format(**paths) for a in argv]
    out = tmp_path / "o"
    assert main([*argv, "--epochs", "1", "--out", str(out)] if argv[0] == "train" and
                "--config" not in argv else [*argv, "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("dpcml: error:") and match in err, err
    assert len(err.splitlines()) == 1
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize(
    "argv,match",
    [
        (["train", "--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
        (["train", "--epochs", "-1"], "argument --epochs: must be >= 1, got -1"),
        (["train", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
        (["train", "--ks", "3", "0"], "argument --ks: must be >= 1, got 0"),
        (["train", "--lr", "0"], "argument --lr: must be > 0"),
        (["train", "--hard-beta", "1.5"], "argument --hard-beta: must be in (0, 1]"),
        (["train", "--dcrs-weight", "-1"], "argument --dcrs-weight: must be a finite number >= 0"),
        (["train", "--min-positives", "0"], "argument --min-positives: must be >= 1"),
        (["demo", "--seeds", "0"], "argument --seeds: must be >= 1, got 0"),
        (["demo", "--steps", "0"], "argument --steps: must be >= 1, got 0"),
        (["demo", "--arms", "nope"], "argument --arms: invalid choice: 'nope'"),
        (["evaluate", "--checkpoint", "x.pt", "--ks", "0"], "argument --ks: must be >= 1"),
        (["train", "--config", "{epochs0}"], "argument --epochs: must be >= 1, got 0"),
        (["demo", "--config", "{seeds0}"], "argument --seeds: must be >= 1, got 0"),
    ],
)
def test_out_of_range_numbers_are_rejected_before_any_work(tmp_path, ratings_dat, capsys, argv,
                                                           match):  # fmt: skip
    if argv[0] == "train":
        argv = [*argv, "--data", str(ratings_dat), "--format", "ml1m"]
    (tmp_path / "epochs0.json").write_text('{"epochs": 0}')
    (tmp_path / "seeds0.json").write_text('{"seeds": 0}')
    argv = [a.format(epochs0=tmp_path / "epochs0.json", seeds0=tmp_path / "seeds0.json")
            for a in argv]  # fmt: skip
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(out)])
    assert exit_.value.code == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ({"epochs": -1}, "epochs must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"dim": 2.5}, "dim must be an integer >= 1"),
        ({"lr": float("nan")}, "lr must be a finite number > 0"),
        ({"sampling": "random"}, "sampling must be one of"),
        ({"adaptive": 1}, "adaptive must be true or false"),
    ],
)
def test_config_rejects_out_of_range_values(kwargs, match):
    with pytest.raises(UserError, match=match):
        DPCMLConfig(**kwargs)


def test_fit_rejects_zero_epochs():
    d = make_multi_interest(0, num_users=30, category_sizes=(20, 10), n_range=(6, 8))
    model = DPCML(*d.matrix.shape, DPCMLConfig(dim=4, n_vectors=2))
    with pytest.raises(UserError, match="epochs must be an integer >= 1, got 0"):
        fit(model, d.matrix, epochs=0)


def test_every_flag_has_help():
    import argparse

    from dpcml.cli import _parser

    parser = _parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [f"{name} {a.option_strings}" for name, sub in subs.items() for a in sub._actions
               if a.option_strings and a.help is None]  # fmt: skip
    assert not missing
