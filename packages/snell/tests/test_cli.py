"""The command line: end-to-end runs on tiny inputs, and one-line errors for bad input."""

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from snell.cli import main


def test_bad_input_gives_one_line_error(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("snell: error:") and "nope" in err and "\n" not in err
    assert (
        main(["train", "--data", str(tmp_path), "--sparsity", "1.5", "--out", str(tmp_path)]) == 2
    )
    assert "sparsity" in capsys.readouterr().err
    assert main(["demo", "--methods", "dora", "--out", str(tmp_path)]) == 2
    assert "unknown methods" in capsys.readouterr().err


def _vtab_fixture(root, n=10):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        label = i % 2
        img = np.clip(rng.normal(60 + 120 * label, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        lines.append(f"images/{i}.png {label}")
    (root / "train800val200.txt").write_text("\n".join(lines) + "\n")
    (root / "test.txt").write_text("\n".join(lines[:4]) + "\n")


def test_train_then_evaluate_roundtrip(tmp_path, capsys):
    """train on a VTAB-layout fixture with local pretrained weights; evaluate the saved adapter."""
    data = tmp_path / "vtab"
    _vtab_fixture(data)
    kw = dict(img_size=32, patch_size=16, depth=2)
    torch.manual_seed(0)
    base = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2, **kw)
    weights = tmp_path / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(weights))
    common = [
        "--model",
        "vit_tiny_patch16_224",
        "--weights",
        str(weights),
        "--data",
        str(data),
        "--img-size",
        "32",
        "--batch-size",
        "5",
    ]
    # timm builds vit_tiny at depth 12; the depth-2 weights must be refused in one line
    assert main(["train", *common, "--epochs", "1", "--out", str(tmp_path / "bad")]) != 0
    capsys.readouterr()
    full = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2, img_size=32)
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(weights))
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                *common,
                "--epochs",
                "1",
                "--warmup-epochs",
                "0",
                "--sparsity",
                "0.5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rec = json.loads((out / "snell_train.json").read_text())
    assert rec["package"] == "snell" and 0 <= rec["metrics"]["test_top1"] <= 1
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert main(["evaluate", *common, "--adapter", str(out / "adapter"), "--out", str(out)]) == 0
    ev = json.loads((out / "snell_evaluate.json").read_text())
    assert ev["metrics"]["test_top1"] == pytest.approx(rec["metrics"]["test_top1"])
