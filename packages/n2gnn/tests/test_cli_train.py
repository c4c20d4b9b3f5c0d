import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from labcore.metrics import roc_auc
from n2gnn.cli import main
from n2gnn.datasets import PRESETS, Preset
from n2gnn.model import N2Node
from n2gnn.synthetic import sbm_heterophily
from n2gnn.train import evaluate_node, fit_node, task_loss, task_metric

TINY = ["--num-steps", "1", "--hidden", "16", "--state", "8", "--num-pseudo", "4"]


def test_binary_rocauc_scores_softmax_column_one():
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.5, 0.4], [0.0, 3.0], [1.0, 1.0]])
    y = torch.tensor([1, 0, 0, 1, 0])
    assert task_metric(logits, y, "rocauc") == pytest.approx(roc_auc(logits.softmax(-1)[:, 1], y))


def test_multilabel_metric_and_loss_skip_unlabelled_entries():
    logits = torch.tensor([[2.0, -1.0], [-1.0, 0.5], [0.3, 0.2], [1.0, 9.0]])
    y = torch.tensor([[1.0, float("nan")], [0.0, 1.0], [1.0, 0.0], [0.0, float("nan")]])
    ap0 = average_precision_score([1, 0, 1, 0], [2.0, -1.0, 0.3, 1.0])
    ap1 = average_precision_score([1, 0], [0.5, 0.2])
    assert task_metric(logits, y, "ap") == pytest.approx((ap0 + ap1) / 2)
    known = ~torch.isnan(y)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], y[known])
    torch.testing.assert_close(task_loss(logits, y, "multilabel"), ref)


def test_fit_node_keeps_best_validation_weights_and_learns():
    torch.manual_seed(0)
    data = sbm_heterophily(0.25, nodes_per_class=60, seed=0)
    model = N2Node(in_channels=32, out_channels=4, hidden=16, state=8, pieces=2, num_pseudo=4,
                   num_steps=1, dropout=0.0)  # fmt: skip
    res = fit_node(model, data, epochs=30, lr=1e-2, patience=5, show_progress=False)
    losses = [h["val_loss"] for h in res.history]
    assert res.best_epoch == int(np.argmin(losses))
    assert res.epochs_run <= res.best_epoch + 6  # early stopping with patience 5
    val_loss, val_acc = evaluate_node(model, data, data.val_mask)
    assert val_loss == pytest.approx(res.val_loss, rel=1e-5)
    assert val_acc == pytest.approx(res.val_metric)
    assert res.test_metric > 0.5  # chance is 0.25


def test_fit_node_with_random_partitions_runs():
    torch.manual_seed(0)
    data = sbm_heterophily(0.25, nodes_per_class=40, seed=0)
    model = N2Node(in_channels=32, out_channels=4, hidden=16, state=8, pieces=2, num_pseudo=4,
                   num_steps=1, dropout=0.0)  # fmt: skip
    res = fit_node(model, data, epochs=3, num_parts=3, show_progress=False)
    assert res.epochs_run == 3 and np.isfinite(res.val_loss)


def test_train_then_evaluate_karate(tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["train", "--dataset", "KarateClub", "--root", str(tmp_path), "--epochs", "3",
            "--out", str(out), *TINY]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((out / "n2gnn_train.json").read_text())
    assert record["package"] == "n2gnn" and record["config"]["num_pseudo"] == 4
    ckpt = out / "n2gnn_KarateClub.pt"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--root", str(tmp_path),
                 "--out", str(out)]) == 0  # fmt: skip
    assert "KarateClub: test loss" in capsys.readouterr().out
    assert "test_accuracy" in json.loads((out / "n2gnn_evaluate.json").read_text())["metrics"]


def test_train_graph_dataset_from_tu_files(tmp_path, monkeypatch, write_tu):
    write_tu(tmp_path, num_graphs=20)
    monkeypatch.setitem(PRESETS, "TOY", Preset("tu", "TOY", "graph", split="tu10fold"))
    out = tmp_path / "runs"
    argv = ["train", "--dataset", "TOY", "--root", str(tmp_path), "--epochs", "2", "--fold", "3",
            "--out", str(out), *TINY]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "n2gnn_train.json").read_text())["config"]["fold"] == 3
    assert main(["evaluate", "--checkpoint", str(out / "n2gnn_TOY.pt"), "--root", str(tmp_path),
                 "--out", str(out)]) == 0  # fmt: skip


def test_config_file_sets_defaults(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"epochs": 2, "num_pseudo": 3, "hidden": 8, "state": 4,
                               "num_steps": 1}))  # fmt: skip
    out = tmp_path / "runs"
    argv = ["train", "--dataset", "KarateClub", "--root", str(tmp_path), "--config", str(cfg),
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((out / "n2gnn_train.json").read_text())
    assert record["config"]["num_pseudo"] == 3 and record["metrics"]["epochs_run"] == 2


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["train", "--dataset", "Nope"], "unknown dataset 'Nope'"),
        (["train", "--dataset", "AmazonPhoto"], "raw files not found"),
        (["evaluate", "--checkpoint", "missing.pt"], "missing.pt"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, msg):
    assert main([*argv, "--root", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("n2gnn: error:") and msg in err and "\n" not in err


def test_bad_checkpoint_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"x": 1}, bad)
    assert main(["evaluate", "--checkpoint", str(bad), "--root", str(tmp_path)]) == 2
    assert "not an n2gnn checkpoint" in capsys.readouterr().err
