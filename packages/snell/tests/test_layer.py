"""SnellLinear: init, sparsity per q/k/v slice, gradients, recompute, merge (U3, U5, U7, U8)."""

import math

import pytest
import torch
from torch import nn

from snell import SnellConfig, SnellLinear


def layer(n=24, m=36, splits=1, seed=0, **cfg):
    torch.manual_seed(seed)
    return SnellLinear(nn.Linear(n, m), SnellConfig(**cfg), splits=splits)


def test_official_init_is_kaiming_on_each_factor():
    torch.manual_seed(0)
    lin = nn.Linear(768, 3072)
    torch.manual_seed(1)
    lay = SnellLinear(lin, SnellConfig(r=8))
    torch.manual_seed(1)
    A = torch.empty(2, 768, 4)
    B = torch.empty(2, 3072, 4)
    nn.init.kaiming_uniform_(A, a=math.sqrt(5))
    nn.init.kaiming_uniform_(B, a=math.sqrt(5))
    assert torch.equal(lay.snell_A["default"][0], A)
    assert torch.equal(lay.snell_B["default"][0], B)
    assert lay.snell_A["default"].abs().max() <= 1 / math.sqrt(768 * 4)
    assert lay.snell_B["default"].abs().max() > 0  # neither factor is zero
    assert torch.equal(lay.snell_alpha["default"], torch.tensor([[0.1, -0.1]]))
    assert not lay.snell_alpha["default"].requires_grad
    mean_abs = lay.get_delta_weight().abs().mean().item()
    assert 1e-4 < mean_abs < 1e-2  # spec: ≈ 1e-3 at init on ViT-B sizes


def test_parameter_count_equals_lora():
    """U1 per layer: r(n + m), the same as LoRA-r; per split for a fused qkv."""
    lay = layer(24, 36, r=8)
    assert lay.snell_A["default"].numel() + lay.snell_B["default"].numel() == 8 * (24 + 36)
    qkv = layer(24, 72, splits=3, r=8)
    assert qkv.snell_A["default"].numel() + qkv.snell_B["default"].numel() == 3 * 8 * (24 + 24)


@pytest.mark.parametrize("s", [0.1, 0.5, 0.9, 0.99])
def test_sparsity_per_qkv_slice_at_init_and_after_steps(s):
    """U3: each of q, k, v (rows of the fused weight) zeroes its own fraction s."""
    lay = layer(48, 144, splits=3, sparsity=s, adapter_dropout=0.0, adapter_drop_path=0.0)
    opt = torch.optim.AdamW([lay.snell_A["default"], lay.snell_B["default"]], lr=1e-2)
    N = 48 * 48
    for step in range(3):
        delta = lay.get_delta_weight().detach()
        assert delta.shape == (144, 48)
        for i in range(3):
            zeros = (delta[48 * i : 48 * (i + 1)] == 0).sum().item()
            assert abs(zeros / N - s) <= 2 / N + 1e-4, (step, i)
        opt.zero_grad()
        lay(torch.randn(4, 5, 48)).square().sum().backward()
        opt.step()


def test_zero_sparsity_output_is_klora_exactly():
    """U4: at s = 0 the layer adds x · κ(A, B) with no gate."""
    lay = layer(sparsity=0.0).eval()
    x = torch.randn(3, 24)
    from snell.kernels import kernel_delta

    A, B, a = lay.snell_A["default"], lay.snell_B["default"], lay.snell_alpha["default"]
    ref = lay.base_layer(x) + x @ kernel_delta(A, B, a)[0]
    assert torch.equal(lay(x), ref)


def test_gradient_reaches_factors_through_survivors_only():
    """U5 at layer level: nonzero ∂L/∂A and ∂L/∂B; the frozen base gets none."""
    lay = layer(sparsity=0.9, adapter_dropout=0.0, adapter_drop_path=0.0)
    lay(torch.randn(4, 24)).sum().backward()
    assert lay.snell_A["default"].grad.abs().sum() > 0
    assert lay.snell_B["default"].grad.abs().sum() > 0
    assert lay.base_layer.weight.grad is None
    assert lay.snell_alpha["default"].grad is None


def test_recompute_on_and_off_agree():
    """U7: same outputs and gradients (dropout and DropPath seeded identically)."""
    results = []
    x = torch.randn(6, 5, 24)
    for rc in (True, False):
        lay = layer(sparsity=0.5, recompute=rc).train()
        torch.manual_seed(123)
        y = lay(x)
        y.square().sum().backward()
        results.append((y.detach(), lay.snell_A["default"].grad, lay.snell_B["default"].grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_dropout_and_drop_path_are_active_in_training():
    lay = layer(sparsity=0.0, adapter_dropout=0.0, adapter_drop_path=0.5, seed=1).train()
    x = torch.randn(64, 24)
    delta = lay(x) - lay.base_layer(x)
    kept = (delta.abs().sum(1) > 0).float().mean().item()
    assert 0.25 < kept < 0.75  # about half the samples drop the adapter branch
    lay.eval()
    assert (lay(x) - lay.base_layer(x)).abs().sum(1).gt(0).all()


def test_merge_unmerge_roundtrip():
    """U8: merged eval forward == unmerged (atol 1e-5); unmerge restores W0 (1e-6)."""
    lay = layer(sparsity=0.5).eval()
    with torch.no_grad():
        lay.snell_A["default"].mul_(30.0)  # a sizeable update
    w0 = lay.base_layer.weight.detach().clone()
    x = torch.randn(7, 24)
    ref = lay(x)
    lay.merge()
    assert (lay.base_layer.weight - w0).abs().max() > 1e-3
    torch.testing.assert_close(lay(x), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(lay.base_layer(x), ref, atol=1e-5, rtol=0)
    lay.unmerge()
    torch.testing.assert_close(lay.base_layer.weight, w0, atol=1e-6, rtol=0)
    torch.testing.assert_close(lay(x), ref, atol=1e-6, rtol=0)


def test_lora_baseline_low_rank_path():
    """LoRA (linear kernel, lora init): zero update at init, then rank ≤ r, factored path."""
    lay = layer(48, 96, splits=2, kernel="linear", init="lora", recompute=False).eval()
    x = torch.randn(5, 48)
    assert torch.equal(lay(x), lay.base_layer(x))
    with torch.no_grad():
        lay.snell_B["default"].normal_()
    d = lay.get_delta_weight().double()
    assert torch.linalg.matrix_rank(d[:48], rtol=1e-4) == 8
    torch.testing.assert_close(lay(x), lay.base_layer(x) + x @ d.float().T, atol=1e-5, rtol=0)


def test_wrapping_non_linear_is_an_error():
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        SnellLinear(nn.Conv2d(3, 3, 1), SnellConfig())


def test_recompute_keeps_the_live_peak_independent_of_depth():
    """Pitfall 6 / M5 at unit scale: with recompute, ΔW-sized tensors exist one layer at a time,
    so the live peak does not grow with depth; without it every layer keeps several copies."""
    from labcore.memory import TensorMemoryTracker

    n = m = 256
    dw = 4 * n * m  # bytes of one fp32 ΔW-sized tensor

    def peak(depth: int, recompute: bool) -> int:
        torch.manual_seed(0)
        cfg = SnellConfig(sparsity=0.9, recompute=recompute)
        net = nn.Sequential(*(SnellLinear(nn.Linear(n, m), cfg) for _ in range(depth)))
        x = torch.randn(4, n)  # tiny activations: the peak is ΔW-sized tensors
        with TensorMemoryTracker("cpu") as mem:
            net(x).sum().backward()
        return mem.peak_bytes

    assert peak(8, True) - peak(2, True) < dw
    assert peak(8, False) - peak(2, False) >= 2 * 6 * dw  # ≥ 2 copies per extra layer (M5)


def test_fused_qkv_runs_split_by_split_like_the_official_layout():
    """Issue 10: the fused q|k|v layer gives the official separate-linears layout's outputs and
    gradients, and its live peak (fwd + bwd) is no higher than that layout's and below 0.2.0's
    all-three-at-once forward."""
    from snell.bench import _fwd_bwd, _qkv_layouts, qkv_layer_memory

    fns, params = _qkv_layouts(64, seed=1)
    x = torch.randn(2, 9, 64, requires_grad=True)
    outs, grads = {}, {}
    for name in ("fused", "official"):
        torch.manual_seed(3)  # same dropout / DropPath draws
        y = fns[name](x)
        y = torch.cat(y, -1) if isinstance(y, tuple) else y
        (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
        outs[name] = y.detach()
        grads[name] = [p.grad.clone() for p in params[name] if p.requires_grad] + [x.grad.clone()]
        for p in params[name]:
            p.grad = None
        x.grad = None
    torch.testing.assert_close(outs["fused"], outs["official"], rtol=1e-5, atol=1e-6)
    (gA, gB, gx), sep = grads["fused"], grads["official"]
    torch.testing.assert_close(gA, torch.cat(sep[0:6:2]), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gB, torch.cat(sep[1:6:2]), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gx, sep[6], rtol=1e-5, atol=1e-6)
    _fwd_bwd(fns["fused"], x)  # and the layer trains through the in-place add

    mem = qkv_layer_memory(width=128, batch=2, tokens=17, repeats=1)
    peak = {k: v["peak_bytes"] for k, v in mem.items()}
    assert peak["fused"] <= peak["official"]
    delta_bytes = 4 * 128 * 128
    assert peak["joint_0.2"] - peak["fused"] >= 2 * 3 * delta_bytes  # old: several ΔW copies x3
