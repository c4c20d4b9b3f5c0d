import json
import os
import subprocess
import sys

import pytest

from diffusion_features.cli import main


def test_bench_accepts_quick(tmp_path, monkeypatch):
    import diffusion_features.bench as bench

    real = bench.run_bench
    monkeypatch.setattr(bench, "run_bench", lambda **kw: real(**{**kw, "repeats": 1}))
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "diffusion_features_bench.json").read_text())
    assert {c["metric"] for c in rec["claims"]} == {"max overhead vs plain", "time ratio"}
    assert all(c["threshold"] is not None for c in rec["claims"])
    assert (tmp_path / "diffusion_features_bench.png").is_file()
    assert (
        rec["metrics"]["stored_feature_bytes"]["capture_1"] == 128 * 4 * 4 * 2
    )  # 128 ch, 4x4, fp16


@pytest.mark.dist
def test_torchrun_two_ranks_equal_single_process(tmp_path):
    """train under torchrun (gloo, 2 CPU ranks): each rank extracts half of the images and
    trains half of the MLPs; the mIoU equals the single-process run's (tolerance 1e-9: the
    same per-model seeds and summed integer votes)."""
    from .test_cli import _ddpm_seg

    data = _ddpm_seg(tmp_path / "seg")
    args = [
        "train",
        "--data",
        str(data),
        "--num-classes",
        "3",
        "--n-train",
        "2",
        "--runs",
        "2",
        "--img-size",
        "32",
        "--label-size",
        "32",
        "--ids",
        "up-level3-repeat2-res-out",
        "--n-models",
        "2",
        "--max-epochs",
        "1",
    ]
    assert main([*args, "--out", str(tmp_path / "single")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "diffusion_features.cli",
        *args,
        "--out",
        str(tmp_path / "multi"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    single = json.loads((tmp_path / "single" / "diffusion_features_train.json").read_text())
    multi = json.loads((tmp_path / "multi" / "diffusion_features_train.json").read_text())
    assert list((tmp_path / "multi").glob("*.json")) == [
        tmp_path / "multi" / "diffusion_features_train.json"
    ]
    assert multi["world_size"] == 2 if "world_size" in multi else True
    for a, b in zip(single["metrics"]["miou_runs"], multi["metrics"]["miou_runs"]):
        assert abs(a - b) < 1e-9
