"""Bad input ends in one line on stderr, exit code 2, and nothing written: out-of-range numbers
(flags, config files, the Python API) and unreadable data or checkpoint files."""

import json

import pytest
import torch

from labcore.cli import UserError
from n2gnn.cli import main
from n2gnn.datasets import PRESETS, Preset
from n2gnn.demo import DemoConfig
from n2gnn.model import N2Config, N2Node
from n2gnn.synthetic import sbm_heterophily
from n2gnn.train import FitConfig, fit_node

TINY = ["--num-steps", "1", "--hidden", "8", "--state", "4", "--num-pseudo", "3"]


def run(argv, capsys):
    """Exit code and stderr lines of ``n2gnn argv`` (argparse's own errors exit via SystemExit)."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


def nothing_written(out):
    return not out.exists() or not any(out.rglob("*"))


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["train", "--dataset", "KarateClub", "--epochs", "0"], "--epochs"),
        (["train", "--dataset", "KarateClub", "--epochs", "-1"], "--epochs"),
        (["train", "--dataset", "KarateClub", "--patience", "0"], "--patience"),
        (["train", "--dataset", "KarateClub", "--batch-size", "0"], "--batch-size"),
        (["train", "--dataset", "KarateClub", "--num-parts", "0"], "--num-parts"),
        (["train", "--dataset", "KarateClub", "--lr", "0"], "--lr"),
        (["train", "--dataset", "KarateClub", "--lr", "nan"], "--lr"),
        (["train", "--dataset", "KarateClub", "--weight-decay", "-1e-3"], "--weight-decay"),
        (["train", "--dataset", "KarateClub", "--dropout", "1"], "--dropout"),
        (["train", "--dataset", "KarateClub", "--hidden", "0"], "--hidden"),
        (["train", "--dataset", "KarateClub", "--fold", "-1"], "--fold"),
        (["train", "--dataset", "KarateClub", "--epochs", "two"], "--epochs"),
        (["demo", "--seeds", "0"], "--seeds"),
        (["demo", "--node-epochs", "0"], "--node-epochs"),
        (["demo", "--graph-epochs", "-3"], "--graph-epochs"),
        (["bench", "--repeats", "0"], "--repeats"),
        (
            ["import-official", "--checkpoint", "x.pth", "--dataset", "Cora", "--num-steps", "0"],
            "--num-steps",
        ),
    ],
)
def test_out_of_range_flags_exit_2_before_any_work(tmp_path, capsys, argv, msg):
    out = tmp_path / "runs"
    code, err = run([*argv, "--out", str(out)], capsys)
    assert code == 2
    assert msg in err[-1] and "error" in err[-1]  # argparse: usage, then the one error line
    assert nothing_written(out)


@pytest.mark.parametrize(
    "cfg,msg",
    [
        ({"epochs": 0}, "--epochs: must be >= 1"),
        ({"batch_size": 0}, "--batch-size: must be >= 1"),
        ({"lr": -1.0}, "--lr: must be > 0"),
        ({"num_pseudo": 0}, "--num-pseudo: must be >= 1"),
        ({"dropout": 1.5}, "--dropout: must be in [0, 1)"),
    ],
)
def test_config_file_values_are_checked_like_flags(tmp_path, capsys, cfg, msg):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "runs"
    argv = ["train", "--dataset", "KarateClub", "--root", str(tmp_path), "--config", str(path),
            "--out", str(out), "--epochs", str(cfg.get("epochs", 1))]  # fmt: skip
    if "epochs" in cfg:
        argv = argv[:-2]
    code, err = run(argv, capsys)
    assert code == 2 and msg in err[-1], err  # labcore checks config values like flags
    assert nothing_written(out)


@pytest.mark.parametrize(
    "build,msg",
    [
        (lambda: N2Config(in_channels=4, out_channels=2, num_steps=0), "num_steps must be >= 1"),
        (lambda: N2Config(in_channels=4, out_channels=2, hidden=2.5), "hidden must be an integer"),
        (lambda: N2Config(in_channels=0, out_channels=2), "in_channels must be >= 1"),
        (lambda: N2Config(in_channels=4, out_channels=2, dropout=-0.1), "dropout must be in"),
        (lambda: N2Config(in_channels=4, out_channels=2, class_pieces=3), "class_pieces"),
        (lambda: N2Config(in_channels=4, out_channels=2, residual="x"), "residual"),
        (lambda: N2Node(in_channels=4, out_channels=2, pieces=0), "pieces must be >= 1"),
        (lambda: FitConfig(epochs=0), "epochs must be >= 1"),
        (lambda: FitConfig(weight_decay=-1), "weight_decay must be in"),
        (lambda: DemoConfig(seeds=0), "seeds must be >= 1"),
    ],
)
def test_python_api_rejects_out_of_range_values(build, msg):
    with pytest.raises(UserError, match=msg):
        build()


def test_fit_node_rejects_zero_epochs_before_training():
    model = N2Node(in_channels=32, out_channels=4, hidden=8, state=4, num_pseudo=3, num_steps=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match="epochs must be >= 1"):
        fit_node(model, sbm_heterophily(0.25, nodes_per_class=10), epochs=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("command", [["bench", "--quick", "--no-memory"], ["demo"]])
def test_cuda_without_gpu_is_one_line(tmp_path, capsys, command):
    out = tmp_path / "runs"
    code, err = run([*command, "--device", "cuda", "--out", str(out)], capsys)
    assert code == 2 and len(err) == 1 and "no CUDA device" in err[0]
    assert nothing_written(out)


# --- unreadable data files ------------------------------------------------------------------


def tu_root(tmp_path, monkeypatch, write_tu):
    write_tu(tmp_path, num_graphs=20)
    monkeypatch.setitem(PRESETS, "TOY", Preset("tu", "TOY", "graph", split="tu10fold"))
    return tmp_path / "TOY" / "raw"


def train_fails(tmp_path, capsys, dataset, *expected):
    out = tmp_path / "runs"
    argv = ["train", "--dataset", dataset, "--root", str(tmp_path), "--epochs", "1",
            "--out", str(out), *TINY]  # fmt: skip
    code, err = run(argv, capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("n2gnn: error:")
    for text in expected:
        assert text in err[0], err[0]
    assert nothing_written(out)
    return err[0]


def test_empty_tu_file(tmp_path, capsys, monkeypatch, write_tu):
    raw = tu_root(tmp_path, monkeypatch, write_tu)
    (raw / "TOY_graph_labels.txt").write_bytes(b"")
    train_fails(tmp_path, capsys, "TOY", "empty file", "TOY_graph_labels.txt")


def test_undecodable_tu_file(tmp_path, capsys, monkeypatch, write_tu):
    raw = tu_root(tmp_path, monkeypatch, write_tu)
    (raw / "TOY_A.txt").write_bytes(b"1, 2\n\xff\xfe\x00 broken\n")
    train_fails(tmp_path, capsys, "TOY", "not UTF-8 text", "TOY_A.txt")


def test_tu_file_that_is_not_numbers(tmp_path, capsys, monkeypatch, write_tu):
    raw = tu_root(tmp_path, monkeypatch, write_tu)
    (raw / "TOY_graph_indicator.txt").write_text("1\n1\nabc\n")
    train_fails(tmp_path, capsys, "TOY", "TOY_graph_indicator.txt line 3")


def test_corrupt_processed_file_names_it_and_what_to_delete(tmp_path, capsys, monkeypatch,
                                                            write_tu):  # fmt: skip
    tu_root(tmp_path, monkeypatch, write_tu)
    assert main(["train", "--dataset", "TOY", "--root", str(tmp_path), "--epochs", "1",
                 "--out", str(tmp_path / "ok"), *TINY]) == 0  # fmt: skip
    processed = tmp_path / "TOY" / "processed" / "data.pt"
    processed.write_bytes(processed.read_bytes()[:100])  # truncated
    train_fails(tmp_path, capsys, "TOY", "cannot read processed file", "data.pt", "delete")


def test_truncated_npz(tmp_path, capsys):
    raw = tmp_path / "Photo" / "raw"
    raw.mkdir(parents=True)
    (raw / "amazon_electronics_photo.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    train_fails(tmp_path, capsys, "AmazonPhoto", "corrupt or truncated .npz",
                "amazon_electronics_photo.npz")  # fmt: skip


def test_corrupt_planetoid_pickle(tmp_path, capsys):
    raw = tmp_path / "Cora" / "raw"
    raw.mkdir(parents=True)
    for part in ("x", "tx", "allx", "y", "ty", "ally", "graph"):
        (raw / f"ind.cora.{part}").write_bytes(b"\x80\x04garbage, not a pickle")
    (raw / "ind.cora.test.index").write_text("1\n2\n")
    train_fails(tmp_path, capsys, "Cora", "cannot unpickle", "ind.cora.x")


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "foreign"])
def test_unreadable_checkpoint_is_one_line(tmp_path, capsys, kind):
    good = tmp_path / "good"
    assert main(["train", "--dataset", "KarateClub", "--root", str(tmp_path), "--epochs", "1",
                 "--out", str(good), *TINY]) == 0  # fmt: skip
    blob = (good / "n2gnn_KarateClub.pt").read_bytes()
    bad = tmp_path / "model.pt"
    if kind == "foreign":
        torch.save({"weights": torch.zeros(2)}, bad)
    else:
        bad.write_bytes(
            {"empty": b"", "truncated": blob[: len(blob) // 2], "garbage": b"\x00x"}[kind]
        )
    out = tmp_path / "runs"
    code, err = run(["evaluate", "--checkpoint", str(bad), "--root", str(tmp_path), "--out",
                     str(out)], capsys)  # fmt: skip
    assert code == 2 and len(err) == 1 and "model.pt" in err[0], err
    assert nothing_written(out)


def test_every_flag_has_help_text():
    import argparse

    from labcore.cli import common_parser
    from n2gnn.cli import build_parser

    common = {a.dest for a in common_parser("n2gnn")._actions}  # labcore's, documented there
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if action.dest in common or action.dest == "help":
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings}"
