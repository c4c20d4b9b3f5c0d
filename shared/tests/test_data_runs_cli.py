import json

import numpy as np
import pytest
import torch

import labcore
from labcore.cli import (
    UserError,
    common_parser,
    error_boundary,
    nonnegative_int,
    parse_args,
    positive_float,
    positive_int,
    unit_interval,
)
from labcore.data import data_root, load_digits_images, split_indices, stratified_split
from labcore.runs import Claim, Timer, resolve_device, seed_everything, write_result


def test_data_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LABCORE_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("LABCORE_DATA")
    assert data_root().name == "labcore"


def test_splits_partition_and_are_seeded():
    parts = split_indices(103, (0.6, 0.2, 0.2), seed=3)
    assert [len(p) for p in parts] == [62, 20, 21]
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))
    assert all((a == b).all() for a, b in zip(parts, split_indices(103, (0.6, 0.2, 0.2), seed=3)))
    with pytest.raises(ValueError, match="sum to 1"):
        split_indices(10, (0.5, 0.2))


def test_stratified_split_keeps_proportions():
    y = np.repeat([0, 1, 2], [100, 50, 10])
    train, test = stratified_split(y, (0.8, 0.2), seed=0)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 160
    assert np.bincount(y[test]).tolist() == [20, 10, 2]


def test_digits_images():
    x, y = load_digits_images(size=16, channels=3)
    assert x.shape == (1797, 3, 16, 16) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and torch.equal(x[:, 0], x[:, 2])
    assert y.tolist().count(0) == 178 and y.max() == 9


def test_seed_timer_device():
    seed_everything(5)
    a = torch.rand(3)
    seed_everything(5)
    assert torch.equal(a, torch.rand(3))
    with Timer() as t:
        sum(range(1000))
    assert t.elapsed > 0
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(UserError, match="no CUDA"):
            resolve_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu9")


def test_write_result_schema(tmp_path):
    path = write_result(
        tmp_path, package="labcore", command="bench", dataset="none",
        metrics={"acc": np.float32(0.5), "t": torch.tensor(2.0)}, seed=1,
        claims=[Claim("faster", "time_s", 1.0, 4.0, "s")],
    )  # fmt: skip
    rec = json.loads(path.read_text())
    assert path.name == "labcore_bench.json"
    assert {"package", "version", "command", "dataset", "metrics", "memory", "timings", "config",
            "device", "versions", "seed", "claims"} <= set(rec)  # fmt: skip
    assert rec["version"] == labcore.__version__ and rec["metrics"] == {"acc": 0.5, "t": 2.0}
    assert rec["claims"][0]["ratio"] == 0.25 and "torch" in rec["versions"]


def _parser():
    import argparse

    p = argparse.ArgumentParser(prog="pkg")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", parents=[common_parser("pkg")])
    d.add_argument("--epochs", type=positive_int, default=3, help="training epochs")
    d.add_argument("--lr", type=positive_float, default=0.1, help="learning rate")
    d.add_argument("--ratio", type=unit_interval, default=0.5, help="kept fraction")
    d.add_argument("--warmup", type=nonnegative_int, default=0, help="warm-up steps")
    return p


def test_config_file_sets_defaults_and_flags_win(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"epochs": 7, "seed": 4}))
    args = parse_args(_parser(), ["demo", "--config", str(cfg), "--seed", "9"])
    assert (args.epochs, args.seed) == (7, 9)
    toml = tmp_path / "c.toml"
    toml.write_text("epochs = 11\n")
    assert parse_args(_parser(), ["demo", "--config", str(toml)]).epochs == 11
    cfg.write_text(json.dumps({"nope": 1}))
    with pytest.raises(UserError, match="unknown keys"):
        parse_args(_parser(), ["demo", "--config", str(cfg)])


def test_threads_flag_sets_torch_threads_and_rejects_zero(capsys, tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        assert parse_args(_parser(), ["demo"]).threads is None  # torch's default kept
        assert torch.get_num_threads() == before
        cfg = tmp_path / "c.json"
        cfg.write_text(json.dumps({"threads": 1}))
        assert parse_args(_parser(), ["demo", "--config", str(cfg)]).threads == 1
        assert torch.get_num_threads() == 1
        with pytest.raises(SystemExit) as e:
            parse_args(_parser(), ["demo", "--threads", "0"])
        assert e.value.code == 2 and "must be >= 1" in capsys.readouterr().err
        cfg.write_text(json.dumps({"threads": 0}))  # a config value is checked like the flag
        with pytest.raises(SystemExit) as e:
            parse_args(_parser(), ["demo", "--config", str(cfg)])
        assert e.value.code == 2 and "must be >= 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_error_boundary_one_line(capsys):
    @error_boundary("pkg")
    def main(argv=None):
        if argv == "missing":
            open("/nonexistent/file.txt")
        raise UserError("bad layout: expected images/ and annotations/")

    assert main() == 2
    assert capsys.readouterr().err == "pkg: error: bad layout: expected images/ and annotations/\n"
    assert main("missing") == 2
    err = capsys.readouterr().err
    assert err.startswith("pkg: error:") and "/nonexistent/file.txt" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "must be >= 1"),
        (["--epochs", "-1"], "must be >= 1"),
        (["--epochs", "2.5"], "expected int"),
        (["--lr", "0"], "must be > 0"),
        (["--lr", "nan"], "must be finite"),
        (["--ratio", "1.5"], "must be in [0, 1]"),
        (["--warmup", "-3"], "must be >= 0"),
    ],
)
def test_counts_sizes_rates_are_checked(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        parse_args(_parser(), ["demo", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_config_values_are_checked_like_flags(capsys, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"epochs": 0}))
    with pytest.raises(SystemExit):
        parse_args(_parser(), ["demo", "--config", str(cfg)])
    assert "--epochs: must be >= 1" in capsys.readouterr().err
    cfg.write_text(json.dumps({"epochs": 4, "lr": 0.5}))
    args = parse_args(_parser(), ["demo", "--config", str(cfg)])
    assert (args.epochs, args.lr) == (4, 0.5) and isinstance(args.epochs, int)


def test_out_is_checked_before_any_work(tmp_path):
    a_file = tmp_path / "results.json"
    a_file.write_text("{}")
    with pytest.raises(UserError, match="exists and is not a directory"):
        parse_args(_parser(), ["demo", "--out", str(a_file)])
    with pytest.raises(UserError, match="is a file, not a directory"):
        parse_args(_parser(), ["demo", "--out", str(a_file / "sub")])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):  # root ignores permission bits
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(UserError, match="is not writable"):
            parse_args(_parser(), ["demo", "--out", str(locked / "new")])
    finally:
        locked.chmod(0o700)
    fresh = tmp_path / "a" / "b"
    assert parse_args(_parser(), ["demo", "--out", str(fresh)]).out == fresh
    assert not fresh.exists()  # checking creates nothing


def test_out_on_a_read_only_filesystem(monkeypatch, tmp_path):
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == str(tmp_path) else real(p, m))
    with pytest.raises(UserError, match="is not writable"):
        parse_args(_parser(), ["demo", "--out", str(tmp_path / "runs")])


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        parse_args(_parser(), ["demo", "--help"])
    out = capsys.readouterr().out
    assert "training epochs (default: 3)" in out and "(default: fp32)" in out


def test_claim_threshold_and_direction(tmp_path):
    assert Claim("x", "m", 2.0, threshold=1.5).met is True
    assert Claim("x", "m", 2.0, threshold=1.5, higher_is_better=False).met is False
    assert Claim("x", "m", float("nan"), threshold=1.0).met is False
    assert Claim("x", "m", 2.0).met is None
    path = write_result(tmp_path, package="labcore", command="bench", dataset="none", metrics={},
                        claims=[Claim("fast", "t", 1.0, 4.0, "s", threshold=2.0,
                                      higher_is_better=False)])  # fmt: skip
    rec = json.loads(path.read_text())
    assert rec["claims"][0]["met"] is True and rec["world_size"] == 1
