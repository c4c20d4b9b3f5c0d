"""The command line: end-to-end runs on tiny inputs, and one-line errors for bad input."""

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from snell import SnellConfig
from snell.cli import main


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("snell: error:") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_input_gives_one_line_error(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "nope")
    assert main(["demo", "--methods", "dora", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "unknown methods")
    (tmp_path / "taken").write_text("x")  # --out is checked before any work
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "taken")]) == 2
    _one_line_error(capsys, "taken", "not a directory")


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--sparsity", "1.5"),
        ("--sparsity", "1"),
        ("--epochs", "0"),
        ("--batch-size", "0"),
        ("--adapter-rank", "0"),
        ("--lr", "0"),
        ("--lr", "nan"),
        ("--weight-decay", "-1"),
        ("--workers", "-1"),
        ("--img-size", "-3"),
        ("--adapter-dropout", "1.2"),
        ("--model-kwargs", "[1, 2]"),
    ],
)
def test_every_count_size_and_rate_is_checked(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(tmp_path), flag, value, "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists()


def test_config_errors_from_the_python_api_are_user_errors():
    from labcore.cli import UserError
    from snell.finetune import TrainSettings

    with pytest.raises(UserError, match="r=6 must be a multiple of num_pieces=4"):
        SnellConfig(r=6, num_pieces=4)
    with pytest.raises(UserError, match="batch_size must be >= 1"):
        TrainSettings(batch_size=0)
    with pytest.raises(UserError, match="lr must be > 0"):
        TrainSettings(lr=float("inf"))
    with pytest.raises(UserError, match="precision must be one of"):
        TrainSettings(precision="fp8")


def _folder_fixture(root, n=4, size=12):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(2):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(rng.normal(60 + 120 * c, 20, (size, size, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.png")


TINY = ["--model", "vit_tiny_patch16_224", "--model-kwargs", '{"depth": 1}', "--img-size", "32",
        "--batch-size", "4", "--epochs", "1", "--warmup-epochs", "0"]  # fmt: skip


def test_corrupt_image_in_image_folder(tmp_path, capsys):
    """Issue 10: one line naming the file, exit 2, nothing written; or skipped and counted."""
    data = tmp_path / "folder"
    _folder_fixture(data)
    bad = data / "train" / "class1" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "run"
    assert main(["train", *TINY, "--data", str(data), "--out", str(out)]) == 2
    _one_line_error(capsys, str(bad), "--skip-bad-images")
    assert not out.exists() or not any(out.iterdir())
    args = ["train", *TINY, "--data", str(data), "--skip-bad-images", "--out", str(out)]
    assert main(args) == 0
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().err
    rec = json.loads((out / "snell_train.json").read_text())
    assert rec["metrics"]["skipped_images"] == 1


@pytest.mark.parametrize("workers", [0, 1])
def test_image_that_fails_only_when_decoded(tmp_path, capsys, workers):
    """A truncated JPEG passes the header check; reading it in training stops the run in one
    line naming it (also from a DataLoader worker), before anything is written."""
    import io

    data = tmp_path / "folder"
    _folder_fixture(data)
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    cut = data / "train" / "class0" / "cut.jpg"
    cut.write_bytes(buf.getvalue()[: int(0.9 * len(buf.getvalue()))])
    out = tmp_path / "run"
    args = ["train", *TINY, "--data", str(data), "--workers", str(workers), "--out", str(out)]
    assert main(args) == 2
    _one_line_error(capsys, str(cut), "truncated")
    assert not out.exists() or not any(out.rglob("*.json"))
    assert not (out / "adapter").exists()


def test_unreadable_weights_and_adapter_files(tmp_path, capsys):
    data = tmp_path / "folder"
    _folder_fixture(data)
    for name, blob in (("w.npz", b"PK\x03\x04 broken zip"), ("w.safetensors", b"\x00" * 16)):
        (tmp_path / name).write_bytes(blob)
        args = ["train", *TINY, "--data", str(data), "--weights", str(tmp_path / name),
                "--out", str(tmp_path / "o")]  # fmt: skip
        assert main(args) == 2
        _one_line_error(capsys, "cannot read weights", name)
    out = tmp_path / "run"
    assert main(["train", *TINY, "--data", str(data), "--out", str(out)]) == 0
    capsys.readouterr()
    ev = ["evaluate", *TINY[:8], "--data", str(data), "--adapter", str(out / "adapter"),
          "--out", str(tmp_path / "ev")]  # fmt: skip
    weights = out / "adapter" / "adapter_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:100])
    assert main(ev) == 2
    _one_line_error(capsys, "adapter")
    weights.write_bytes(good)
    (out / "adapter" / "adapter_config.json").write_text("{not json")
    assert main(ev) == 2
    _one_line_error(capsys, "adapter_config.json", "not a JSON adapter config")
    assert not (tmp_path / "ev").exists()


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
    weights = tmp_path / "vit_tiny.safetensors"

    def save_weights(depth):
        torch.manual_seed(0)
        base = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3,
                                 img_size=32, depth=depth)  # fmt: skip
        save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(weights))

    common = ["--model", "vit_tiny_patch16_224", "--model-kwargs", '{"depth": 1}',
              "--weights", str(weights), "--data", str(data), "--img-size", "32",
              "--batch-size", "5"]  # fmt: skip
    save_weights(2)  # depth-2 weights into a depth-1 model: refused in one line
    assert main(["train", *common, "--epochs", "1", "--out", str(tmp_path / "bad")]) == 2
    _one_line_error(capsys, "does not fit VisionTransformer", "unexpected")
    save_weights(1)  # the 3-class head is re-initialised for the 2 classes of the data
    out = tmp_path / "run"
    args = ["train", *common, "--epochs", "2", "--warmup-epochs", "0", "--sparsity", "0.5",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    rec = json.loads((out / "snell_train.json").read_text())
    assert rec["package"] == "snell" and 0 <= rec["metrics"]["test_top1"] <= 1
    assert len(rec["metrics"]["train_loss"]) == 2 and rec["world_size"] == 1
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert main(["evaluate", *common, "--adapter", str(out / "adapter"), "--out", str(out)]) == 0
    ev = json.loads((out / "snell_evaluate.json").read_text())
    assert ev["metrics"]["test_top1"] == pytest.approx(rec["metrics"]["test_top1"])


def test_python_api_train_and_evaluate(tmp_path):
    """``snell.train`` / ``snell.evaluate`` are what the CLI runs, callable from Python."""
    import snell

    data = tmp_path / "folder"
    _folder_fixture(data)
    settings = snell.TrainSettings(
        model="vit_tiny_patch16_224", model_kwargs={"depth": 1}, img_size=32, batch_size=4,
        epochs=2, warmup_epochs=0,
    )  # fmt: skip
    cfg = SnellConfig(r=4, sparsity=0.5)
    res = snell.train(data, settings, cfg, out_dir=tmp_path / "run", device="cpu", seed=3)
    assert isinstance(res.model, snell.SnellModel) and res.num_classes == 2
    assert len(res.metrics["train_loss"]) == 2 and 0 <= res.metrics["test_top1"] <= 1
    again = snell.train(data, settings, SnellConfig(r=4, sparsity=0.5), device="cpu", seed=3)
    assert again.metrics["train_loss"] == res.metrics["train_loss"]  # seeded: reproducible
    assert again.adapter_dir is None and res.adapter_dir == tmp_path / "run" / "adapter"
    ev = snell.evaluate(data, res.adapter_dir, settings, device="cpu", seed=3)
    assert ev["test_top1"] == pytest.approx(res.metrics["test_top1"]) and ev["n_images"] == 8
