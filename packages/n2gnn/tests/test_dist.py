"""torchrun (2 processes, gloo, CPU) vs one process; bf16 autocast training on CPU; full-graph
node classification refuses to run on several processes."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch_geometric.data import Batch

from labcore import dist
from n2gnn.cli import main
from n2gnn.model import N2Graph, N2Node
from n2gnn.synthetic import majority_colour_graphs

# fold 0 of the 20-graph toy set: 16 train graphs = 4 global batches of 4, 2 per rank
TRAIN = ["train", "--dataset", "TOY", "--epochs", "4", "--fold", "0", "--batch-size", "4",
         "--lr", "1e-2",
         "--num-steps", "2", "--hidden", "16", "--state", "8", "--pieces", "2",
         "--num-pseudo", "4", "--dropout", "0", "--device", "cpu", "--threads", "1"]  # fmt: skip
WORKER = textwrap.dedent(
    """
    import sys
    from n2gnn.cli import main
    from n2gnn.datasets import PRESETS, Preset

    PRESETS["TOY"] = Preset("tu", "TOY", "graph", split="tu10fold")
    sys.exit(main(sys.argv[1:]))
    """
)


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.dist
def test_torchrun_two_processes_equal_one_process(tmp_path, write_tu):
    write_tu(tmp_path, num_graphs=20)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    args = [*TRAIN, "--root", str(tmp_path)]
    _run([sys.executable, str(script), *args, "--out", str(tmp_path / "one")])
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(script), *args, "--out", str(tmp_path / "two")])  # fmt: skip
    one = json.loads((tmp_path / "one" / "n2gnn_train.json").read_text())
    two = json.loads((tmp_path / "two" / "n2gnn_train.json").read_text())
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "n2gnn_TOY.pt",
        "n2gnn_train.json",
    ]  # fmt: skip  -- only rank 0 wrote
    # tolerance 1e-5: the same sums in another order (DDP's all-reduce, gathered outputs)
    curve1, curve2 = one["metrics"]["val_loss_curve"], two["metrics"]["val_loss_curve"]
    assert len(curve1) == 4 and max(curve1) - min(curve1) > 1e-4  # training moved the loss
    assert curve2 == pytest.approx(curve1, abs=1e-5)
    for key in ("val_loss", "val_metric", "test_metric", "best_epoch"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], abs=1e-5), key
    a = torch.load(tmp_path / "one" / "n2gnn_TOY.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "two" / "n2gnn_TOY.pt", weights_only=True)["state_dict"]
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4, msg=name)


def test_bf16_training_on_cpu(tmp_path, write_tu, monkeypatch):
    from n2gnn.datasets import PRESETS, Preset

    write_tu(tmp_path, num_graphs=20)
    monkeypatch.setitem(PRESETS, "TOY", Preset("tu", "TOY", "graph", split="tu10fold"))
    for dataset in ("TOY", "KarateClub"):
        out = tmp_path / dataset
        argv = [*TRAIN[:-4], "--precision", "bf16", "--root", str(tmp_path), "--out", str(out)]
        argv[argv.index("--dataset") + 1] = dataset
        if dataset == "KarateClub":  # node level: no batches, no folds
            argv = [a for i, a in enumerate(argv) if a not in ("--batch-size", "--fold")
                    and argv[i - 1] not in ("--batch-size", "--fold")]  # fmt: skip
        assert main(argv) == 0
        record = json.loads((out / "n2gnn_train.json").read_text())
        assert record["config"]["precision"] == "bf16"
        assert record["metrics"]["val_loss"] is not None  # finite (write_result nulls NaN)


def test_autocast_runs_matmuls_in_bf16_and_keeps_the_clip_and_aggregation_in_fp32():
    torch.manual_seed(0)
    graphs = majority_colour_graphs(4, seed=0)
    b = Batch.from_data_list(graphs)
    model = N2Graph(in_channels=8, out_channels=2, hidden=16, state=8, pieces=2, num_pseudo=4,
                    num_steps=2, dropout=0.0).eval()  # fmt: skip
    dtypes = {}

    def record(name, which):
        def hook(module, inputs, output):
            dtypes[name] = (inputs[0] if which == "in" else output).dtype  # the last call

        return hook

    model.cell.local.register_forward_hook(record("local_in", "in"))  # after the sparse Â·Z
    model.cell.disp1.register_forward_hook(record("disp", "out"))
    with torch.no_grad():
        ref = model(b.x, b.edge_index, batch=b.batch)
        with dist.autocast("bf16", "cpu"):
            low = model(b.x, b.edge_index, batch=b.batch)
    assert dtypes == {"local_in": torch.float32, "disp": torch.bfloat16}
    assert low.dtype == torch.bfloat16
    err = (low.float() - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.1  # bf16 rounding: different, and close


def test_node_classification_refuses_several_processes(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    out = tmp_path / "runs"
    code = main(["train", "--dataset", "KarateClub", "--root", str(tmp_path), "--out", str(out),
                 "--epochs", "1"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "single-process" in err[0]
    assert not out.exists()


def test_fit_node_refuses_several_processes(monkeypatch):
    from labcore.cli import UserError
    from n2gnn.synthetic import sbm_heterophily
    from n2gnn.train import fit_node

    monkeypatch.setattr(dist, "world_size", lambda: 2)
    model = N2Node(in_channels=32, out_channels=4, hidden=8, state=4, num_pseudo=3, num_steps=1)
    with pytest.raises(UserError, match="single-process"):
        fit_node(model, sbm_heterophily(0.25, nodes_per_class=10), epochs=1)
