"""Bench formulas and checks; the demo pipeline end to end at toy size."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from snell.bench import MB, VIT_B, expected_static_bytes, memory_checks, training_step
from snell.demo import DemoSettings, acceptance, format_table, run_demo, standin_vit


def test_expected_static_bytes_match_spec_totals():
    assert expected_static_bytes("full_ft") / MB == pytest.approx(1374.0, abs=0.05)
    assert expected_static_bytes("snell8") / MB == pytest.approx(365.7, abs=0.05)
    assert expected_static_bytes("lora8") / MB == pytest.approx(365.7, abs=0.05)
    # stored index: 72 matrices with full grads and AdamW state plus a bool mask per entry
    assert expected_static_bytes("stored_index") / MB == pytest.approx(1448.6, abs=0.05)


def _rows(snell_peak, lora_peak, stored_peak, full_peak, saved_gap):
    def row(name, peak, saved=1e8):
        exp = expected_static_bytes(name.replace("_no_recompute", ""))
        return {
            "static_bytes": exp,
            "static_expected_bytes": exp,
            "saved_bytes_b8": saved,
            "peak_bytes_b8": peak,
        }

    return {
        "full_ft": row("full_ft", full_peak),
        "lora8": row("lora8", lora_peak),
        "klora8": row("klora8", snell_peak),
        "snell8": row("snell8", snell_peak),
        "snell8_no_recompute": row("snell8_no_recompute", snell_peak + 6e8, 1e8 + saved_gap),
        "stored_index": row("stored_index", stored_peak),
    }


def test_memory_checks_pass_and_fail_on_thresholds():
    need = 2 * 4 * VIT_B["sum_mn"]
    qkv = {"fused": {"peak_bytes": 49e6, "time_s": 1.0},
           "official": {"peak_bytes": 50e6, "time_s": 1.0}}  # fmt: skip
    good, claims = memory_checks(_rows(1.1e9, 1.0e9, 1.5e9, 3e9, need + 1), [8], qkv=qkv)
    assert all(c["met"] for c in good)
    assert {c["id"] for c in good} == {"M1", "M2", "M3", "M5", "Q1", "Q2"}
    assert all(c.threshold is not None for c in claims)
    m2 = next(c for c in claims if c.claim.startswith("M2"))
    assert m2.value == pytest.approx(1.1) and m2.unit == "x" and not m2.higher_is_better
    qkv["fused"] = {"peak_bytes": 70e6, "time_s": 1.2}
    bad, _ = memory_checks(_rows(1.2e9, 1.0e9, 1.4e9, 3e9, need - 1), [8], qkv=qkv)
    missed = {c["id"] for c in bad if not c["met"]}
    assert missed == {"M2", "M3", "M5", "Q1", "Q2"}


def test_closed_form_counts_match_timm_and_the_spec():
    """vit_counts at full scale are the spec's ViT-B numbers, and at quick scale they match the
    parameters of the model the quick bench builds."""
    from snell.bench import FULL, QUICK, _vit, vit_counts

    full = vit_counts(FULL)
    assert full["backbone"] == VIT_B["backbone"] and full["head"] == VIT_B["head"]
    assert full["sum_mn"] == VIT_B["sum_mn"] and full["adapters"] == VIT_B["adapters_r8"]
    assert full["alpha"] == VIT_B["alpha"]
    quick = vit_counts(QUICK)
    model = _vit("cpu", QUICK)
    assert sum(p.numel() for p in model.parameters()) == quick["backbone"] + quick["head"]


def test_peak_plot_is_written(tmp_path):
    from snell.bench import plot_peaks

    rows = {"snell8": {"peak_bytes_b2": 1e8, "peak_bytes_b8": 3e8},
            "lora8": {"peak_bytes_b2": 0.9e8, "peak_bytes_b8": 2.8e8}}  # fmt: skip
    path = plot_peaks(rows, (8, 2), tmp_path / "p.png")
    assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("loop, grads_in_forward", [("official", True), ("lean", False)])
def test_training_step_loops_hold_or_free_old_gradients_in_the_forward(loop, grads_in_forward):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    seen = []
    model[2].register_forward_hook(
        lambda *_: seen.append(all(p.grad is not None for p in model.parameters()))
    )
    batch = (torch.randn(4, 6), torch.tensor([0, 1, 2, 0]))
    w0 = model[0].weight.detach().clone()
    training_step(model, opt, batch, loop)
    training_step(model, opt, batch, loop)
    # the first forward has no gradients yet; the second sees the old ones only in engine.py order
    assert seen == [False, grads_in_forward]
    assert not torch.equal(model[0].weight, w0)  # the steps trained
    with pytest.raises(ValueError, match="loop"):
        training_step(model, opt, batch, "fast")


def test_demo_pipeline_toy_size(tmp_path):
    """Transfer runs from a cached stand-in backbone (the pretraining loop is skipped)."""
    from labcore.cli import UserError
    from snell.demo import plot_demo

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in standin_vit("small").state_dict().items()}
    cache = tmp_path / "standin_vit_small_e1.safetensors"
    save_file({**state, "_source_test_acc": torch.tensor(0.5)}, str(cache))
    s = DemoSettings(seeds=1, epochs=2, pretrain_epochs=1, methods=("linear_probe", "snell8"),
                     sparsities=(0.9,), curve_points=2)  # fmt: skip
    assert s.batch_size == 16 and s.warmup_epochs == 10  # the small arch's protocol
    res = run_demo(s, tmp_path, torch.device("cpu"))
    assert res["source_acc"] == 0.5
    r = res["results"]
    assert set(r) == {"linear_probe", "snell8"} and r["snell8"]["sparsity"] == [0.9]
    assert all(0.0 <= v["test_mean"] <= 1.0 for v in r.values())
    curve = r["snell8"]["curves"][0]
    assert curve["step"] == [7, 14]  # 100 images at batch 16: 7 steps per epoch
    assert r["linear_probe"]["curves"][0]["scale"] == [0.0, 0.0]
    assert 0 < curve["scale"][0] < curve["scale"][1] < 1e-2  # SNELL's update starts tiny
    assert "| snell8 |" in format_table(res)
    checks = acceptance(res)
    probe, snell = r["linear_probe"]["test_mean"], r["snell8"]["test_mean"]
    assert checks["A1_adapters_beat_probe_by_5pts"] == (snell >= probe + 0.05)
    paths = plot_demo(res, tmp_path)
    assert [p.name for p in paths] == ["snell_demo_top1.png", "snell_demo_curves.png",
                                       "snell_demo_update_scale.png"]  # fmt: skip
    with pytest.raises(UserError, match="unknown methods"):
        DemoSettings(methods=("dora",))
