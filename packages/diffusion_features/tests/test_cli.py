import json

import numpy as np
import pytest
from PIL import Image

from diffusion_features.cli import main


def _images(folder, n=2, size=24):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(
            folder / f"img{i}.png"
        )
    return folder


def test_catalogue_table_and_json(capsys):
    assert main(["catalogue", "--model", "tiny-sd15"]) == 0
    out = capsys.readouterr().out
    assert "up-level1-repeat1-vit-block0-cross-q" in out and "197 activations" in out
    assert main(["catalogue", "--model", "tiny-pixart", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 32
    assert main(["catalogue", "--model", "tiny-sdxl", "--filter"]) == 0
    assert "0 activations" not in capsys.readouterr().out


def test_extract_resumable_and_atomic(tmp_path, capsys):
    from safetensors.torch import load_file

    imgs = _images(tmp_path / "imgs")
    out = tmp_path / "feats"
    argv = [
        "extract",
        "--images",
        str(imgs),
        "--out",
        str(out),
        "--img-size",
        "32",
        "--ids",
        "up-level1-repeat1-vit-block0-cross-q",
        "up-level3-repeat2-res-out",
    ]
    assert main(argv) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["img0.safetensors", "img1.safetensors"]
    d = load_file(str(out / "img0.safetensors"))
    assert tuple(d["up-level3-repeat2-res-out"].shape) == (32, 16, 16)
    assert main(argv) == 0 and "0 written, 2 already there" in capsys.readouterr().out
    assert main([*argv[:4], str(tmp_path / "npy"), "--format", "npy", *argv[5:]]) == 0
    assert np.load(tmp_path / "npy" / "img1.npy").shape == (64 + 32, 16, 16)


@pytest.mark.parametrize("case", ["bad_image", "empty_dir", "unknown_id", "bad_model"])
def test_bad_input_one_line_exit_2(tmp_path, capsys, case):
    imgs = tmp_path / "imgs"
    ids = ["up-level3-repeat2-res-out"]
    model = "tiny-sd15"
    if case == "bad_image":
        _images(imgs)
        (imgs / "zz.png").write_bytes(b"not a png")
    elif case == "empty_dir":
        imgs.mkdir()
    elif case == "unknown_id":
        _images(imgs)
        ids = ["up-level7-repeat0-res-out"]
    else:
        _images(imgs)
        (tmp_path / "m").mkdir()
        model = str(tmp_path / "m")
    out = tmp_path / "out"
    code = main(
        [
            "extract",
            "--images",
            str(imgs),
            "--out",
            str(out),
            "--img-size",
            "32",
            "--model",
            model,
            "--ids",
            *ids,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("diffusion_features: error:")
    assert not out.exists() or not any(out.iterdir())  # nothing (half-)written


def _ddpm_seg(folder, n=4, size=32):
    from diffusion_features.data import synthetic_shapes

    folder.mkdir(parents=True)
    x, y = synthetic_shapes(n, size=size, seed=0)
    for i in range(n):
        Image.fromarray((x[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(
            folder / f"{i:03d}.png"
        )
        np.save(folder / f"{i:03d}.npy", y[i].numpy())
    return folder


def test_train_label_scarce_and_bf16(tmp_path):
    data = _ddpm_seg(tmp_path / "seg")
    base = [
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
        "up-level2-repeat1-vit-block0-cross-q",
        "--head",
        "mlp-ensemble",
        "--n-models",
        "2",
        "--max-epochs",
        "1",
    ]
    assert main([*base, "--out", str(tmp_path / "r")]) == 0
    rec = json.loads((tmp_path / "r" / "diffusion_features_train.json").read_text())
    assert len(rec["metrics"]["miou_runs"]) == 2 and 0 <= rec["metrics"]["miou_mean"] <= 1
    assert main([*base, "--out", str(tmp_path / "b"), "--precision", "bf16"]) == 0
    (data / "001.npy").write_bytes(b"garbage")
    assert main([*base, "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists()


def _spair(root, n=2):
    rng = np.random.default_rng(0)
    (root / "JPEGImages" / "cat").mkdir(parents=True)
    (root / "PairAnnotation" / "test").mkdir(parents=True)
    for i in range(n):
        for name in (f"s{i}.jpg", f"t{i}.jpg"):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
                root / "JPEGImages" / "cat" / name
            )
        ann = {
            "src_imname": f"s{i}.jpg",
            "trg_imname": f"t{i}.jpg",
            "category": "cat",
            "src_kps": [[5, 6], [20, 30]],
            "trg_kps": [[7, 8], [30, 20]],
            "src_bndbox": [0, 0, 40, 30],
            "trg_bndbox": [2, 2, 42, 38],
        }
        (root / "PairAnnotation" / "test" / f"{i}-s-t:cat.json").write_text(json.dumps(ann))
    return root


def test_evaluate_spair_pck(tmp_path):
    from diffusion_features.data import load_spair_pairs

    root = _spair(tmp_path / "spair")
    pairs = load_spair_pairs(root)
    assert len(pairs) == 2 and tuple(pairs[0]["src_kps"].shape) == (2, 2)
    out = tmp_path / "r"
    assert (
        main(
            [
                "evaluate",
                "--spair",
                str(root),
                "--out",
                str(out),
                "--img-size",
                "32",
                "--preset",
                "ours-v1.5",
            ]
        )
        == 0
    )
    m = json.loads((out / "diffusion_features_evaluate.json").read_text())["metrics"]
    assert m["keypoints"] == 4 and 0 <= m["pck_img@0.1"] <= 1
