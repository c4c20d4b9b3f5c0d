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
    good, claims = memory_checks(_rows(1.1e9, 1.0e9, 1.5e9, 3e9, need + 1), [8])
    assert all(c["met"] for c in good)
    assert {c["id"] for c in good} == {"M1", "M2", "M3", "M5"}
    assert any(c.metric == "peak_MB_b8" and c.baseline == pytest.approx(1000.0) for c in claims)
    bad, _ = memory_checks(_rows(1.2e9, 1.0e9, 1.4e9, 3e9, need - 1), [8])
    missed = {(c["id"], c["what"].split(" at")[0]) for c in bad if not c["met"]}
    assert ("M2", "peak(snell8) / peak(lora8)") in missed
    assert ("M3", "peak(snell8) / peak(stored_index)") in missed
    assert any(i == "M5" for i, _ in missed)


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
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in standin_vit("small").state_dict().items()}
    cache = tmp_path / "standin_vit_small_e1.safetensors"
    save_file({**state, "_source_test_acc": torch.tensor(0.5)}, str(cache))
    s = DemoSettings(
        seeds=1, epochs=1, pretrain_epochs=1, methods=("linear_probe", "snell8"), sparsities=(0.9,)
    )
    res = run_demo(s, tmp_path, torch.device("cpu"))
    assert res["source_acc"] == 0.5
    r = res["results"]
    assert set(r) == {"linear_probe", "snell8"} and r["snell8"]["sparsity"] == [0.9]
    assert all(0.0 <= v["test_mean"] <= 1.0 for v in r.values())
    assert "| snell8 |" in format_table(res)
    checks = acceptance(res)
    probe, snell = r["linear_probe"]["test_mean"], r["snell8"]["test_mean"]
    assert checks["A1_adapters_beat_probe_by_5pts"] == (snell >= probe + 0.05)
    with pytest.raises(ValueError, match="unknown methods"):
        run_demo(DemoSettings(methods=("dora",)), tmp_path, torch.device("cpu"))
