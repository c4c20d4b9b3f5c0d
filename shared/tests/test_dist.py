"""labcore.dist: single-process fallbacks, and the real collectives under torchrun (gloo, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from labcore import dist
from labcore.cli import UserError
from labcore.metrics import ConfusionMatrix


def test_single_process_fallbacks():
    state = dist.init("cpu")
    assert (state.rank, state.world_size, state.backend, state.is_main) == (0, 1, None, True)
    assert dist.world_size() == 1 and dist.is_main()
    t = torch.tensor([1.0, 2.0])
    assert dist.all_reduce(t) is t and t.tolist() == [1.0, 2.0]
    assert dist.all_reduce_dict({"a": 3, "b": torch.tensor([1.5, 2.5])}) == {"a": 3.0, "b": 4.0}
    assert dist.all_gather_cat(t) is t
    model = torch.nn.Linear(2, 2)
    assert dist.wrap_model(model) is model and dist.unwrap(model) is model
    assert dist.sampler(list(range(5))) is None
    assert dist.shard(5).tolist() == [0, 1, 2, 3, 4]
    assert dist.per_rank_batch(6) == 6


def test_precision_rules():
    with dist.autocast("bf16", "cpu"):
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    with dist.autocast("fp32", "cpu"):
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.float32
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        dist.autocast("fp16", "cpu")
    with pytest.raises(UserError, match="precision must be one of"):
        dist.check_precision("fp8", "cpu")
    assert not dist.grad_scaler("bf16", "cpu").is_enabled()
    with pytest.raises(UserError, match="batch size must be >= 1"):
        dist.per_rank_batch(0)


def test_init_rejects_cuda_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UserError, match="no CUDA device"):
        dist.init("cuda")


_WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from labcore import dist
    from labcore.cli import UserError
    from labcore.metrics import ConfusionMatrix
    from labcore.runs import write_result

    state = dist.init("cpu")
    r, w = state.rank, state.world_size
    out = {"rank": r, "world": w, "backend": state.backend}
    out["sums"] = dist.all_reduce_dict({"hits": r + 1, "n": 10})
    out["max"] = dist.all_reduce(torch.tensor([float(r)]), op="max").item()
    out["gathered"] = dist.all_gather_cat(torch.arange(r + 1) + 10 * r).tolist()
    out["shard"] = dist.shard(5).tolist()
    pred = np.load(sys.argv[2]); target = np.load(sys.argv[3])
    idx = dist.shard(len(pred)).numpy()
    cm = ConfusionMatrix(4, ignore_index=255).update(pred[idx], target[idx]).all_reduce()
    out["matrix"] = cm.matrix.tolist()
    try:
        dist.per_rank_batch(3)
    except UserError as e:
        out["odd_batch"] = str(e)
    out["per_rank"] = dist.per_rank_batch(8)
    s = dist.sampler(list(range(10)), shuffle=True, seed=1)
    dist.set_epoch(s, 0); e0 = list(s)
    dist.set_epoch(s, 1); e1 = list(s)
    out["epochs_differ"] = e0 != e1
    out["sampled"] = dist.all_gather_cat(torch.tensor(e0)).tolist()
    model = dist.wrap_model(torch.nn.Linear(3, 1))
    torch.manual_seed(r)
    model(torch.randn(4, 3)).sum().backward()
    out["grad"] = dist.unwrap(model).weight.grad.flatten().tolist()
    write_result(sys.argv[1], package="labcore", command="dist", dataset="-", metrics={"r": r})
    dist.barrier()
    print("RESULT " + json.dumps(out))
    dist.shutdown()
    """
)


@pytest.mark.dist
def test_collectives_under_torchrun(tmp_path):
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 4, size=(7, 5, 5))
    target = rng.integers(0, 4, size=(7, 5, 5))
    target[0, 0, :3] = 255
    np.save(tmp_path / "pred.npy", pred)
    np.save(tmp_path / "target.npy", target)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path / "out"), str(tmp_path / "pred.npy"),
           str(tmp_path / "target.npy")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    outs = sorted(
        (json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")),
        key=lambda o: o["rank"],
    )
    assert [o["rank"] for o in outs] == [0, 1]
    for o in outs:
        assert o["world"] == 2 and o["backend"] == "gloo"
        assert o["sums"] == {"hits": 3.0, "n": 20.0}
        assert o["max"] == 1.0
        assert o["gathered"] == [0, 10, 11]  # ragged: one from rank 0, two from rank 1
        assert "does not divide over 2 processes" in o["odd_batch"]
        assert o["per_rank"] == 4 and o["epochs_differ"]
        assert sorted(o["sampled"]) == list(range(10))  # the two ranks cover the dataset once
        # the split confusion matrix, merged, is the single-process one exactly
        full = ConfusionMatrix(4, ignore_index=255).update(pred, target)
        assert o["matrix"] == full.matrix.tolist()
    assert outs[0]["shard"] == [0, 2, 4] and outs[1]["shard"] == [1, 3]
    # DDP averaged the gradients of the two ranks' different batches
    assert outs[0]["grad"] == pytest.approx(outs[1]["grad"])
    written = list((tmp_path / "out").glob("*.json"))
    assert [p.name for p in written] == ["labcore_dist.json"]
    record = json.loads(written[0].read_text())
    assert record["world_size"] == 2 and record["metrics"] == {"r": 0}
