"""DSA head: shapes, channel counts, parameter counts against the formula, adapters, BN, noise."""

import itertools
import math

import pytest
import torch
from torch import nn

from dsa_ensemble import ACTIVATIONS, DSAHead, DSAModel, MultiHeadEnsemble, SingleHead
from dsa_ensemble.heads import perturb_features
from dsa_ensemble.losses import supervised_loss


def _conv_params(a, b):
    return a * b + b


def test_wrn_channel_counts_and_shapes():
    head = DSAHead(128, 10, 5, adapter_widths=(16, 32, 32, 16))
    assert head.m == 12 and head.expanded_channels == 128 + 12 * 4 == 176
    assert head.shared_channels == 128 - 12 == 116
    out = head(torch.randn(3, 128, 8, 8))
    assert len(out.logits) == 5 and all(z.shape == (3, 10) for z in out.logits)
    assert all(p.shape == (3, 12, 8, 8) for p in out.private)


def test_parameter_count_matches_formula():
    c, k, s_num, widths = 64, 7, 5, (20, 30)
    head = DSAHead(c, k, s_num, adapter_widths=widths)
    m = math.floor(0.1 * c)
    e = c + m * (s_num - 1)
    d = c - m
    expected = _conv_params(c, e)  # expansion 1x1 conv with bias
    for s in range(s_num):
        sizes = [d, *[w + 10 * s for w in widths], d]
        expected += sum(_conv_params(a, b) for a, b in itertools.pairwise(sizes))
        if ACTIVATIONS[s % 5] == "prelu":
            expected += 1 * (len(sizes) - 1)  # one PReLU slope per conv
        expected += 2 * c  # per-head BN affine
        expected += c * k + k  # per-head Linear
    assert sum(p.numel() for p in head.parameters()) == expected
    shared = DSAHead(c, k, s_num, adapter_widths=widths, head_bn="shared")
    assert sum(p.numel() for p in shared.parameters()) == expected - 2 * c * (s_num - 1)


def test_official_adapter_widths_and_activations():
    head = DSAHead(128, 10, 5)
    for s, adapter in enumerate(head.adapters):
        d = 116
        assert adapter.widths == (d, 512 + 10 * s, 1024 + 10 * s, 1024 + 10 * s, 512 + 10 * s, d)
        acts = [m for m in adapter.layers if not isinstance(m, nn.Conv2d)]
        want = [nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU][s % 5]
        assert len(acts) == 5 and all(type(a) is want for a in acts)  # the last conv too
        assert not any(isinstance(m, nn.BatchNorm2d) for m in adapter.layers)
    assert head.adapters[1].layers[1].negative_slope == 0.01


def test_no_residual_output_replaces_shared_channels():
    torch.manual_seed(0)
    head = DSAHead(40, 3, 2, adapter_widths=(8,), noise_factor=0.0).eval()
    z = head.pre(torch.randn(2, 40, 2, 2))
    h = head.head_features(z, 1)
    shared = z[:, 4 * 2 :]
    assert torch.allclose(h[:, :4], z[:, 4:8])  # head 1's private block
    assert torch.allclose(h[:, 4:], head.adapters[1](shared))  # replaced, no residual
    assert not torch.allclose(h[:, 4:], shared)


def test_init_schemes_per_head():
    torch.manual_seed(0)
    head = DSAHead(100, 10, 5, adapter_widths=(50,))
    fc0, fc1 = head.fcs[0], head.fcs[1]
    assert fc0.weight.std().item() == pytest.approx(1e-3, rel=0.1) and fc0.bias.abs().max() == 0
    assert fc1.weight.abs().max() <= 1 / math.sqrt(100) and fc1.bias.abs().max() > 0
    assert head.adapters[0].convs()[0].weight.std().item() == pytest.approx(1e-3, rel=0.1)
    w4 = head.adapters[4].convs()[0]
    assert w4.weight.std().item() == pytest.approx(1.0, rel=0.1)  # N(0,1) weights and bias
    assert w4.bias.std().item() == pytest.approx(1.0, rel=0.3)


def test_perturbation_formula_and_eval_off():
    x = torch.rand(4, 6, 3, 3)
    g = torch.Generator().manual_seed(3)
    draws = torch.rand(3, generator=torch.Generator().manual_seed(3)).tolist()
    y = perturb_features(x, 0.2, prob=1.0, clamp=True, generator=g)
    u, eps = 0.8 + 0.4 * draws[1], -0.2 + 0.4 * draws[2]
    ref = (u * (x - x.mean()) + x.mean() + eps).clamp(0, 1)
    assert torch.allclose(y, ref)
    assert torch.equal(perturb_features(x, 0.2, prob=0.0), x)
    head = DSAHead(32, 4, 3, adapter_widths=(8,), perturb_prob=1.0)
    f = torch.randn(2, 32, 2, 2)
    head.eval()
    a, b = head(f).logits, head(f).logits
    assert all(torch.equal(p, q) for p, q in zip(a, b))  # no perturbation in eval
    head.train()
    torch.manual_seed(0)
    z = head.pre(f)
    assert not torch.allclose(head.head_features(z, 0), head.eval().head_features(z, 0))


def test_per_head_vs_shared_bn_running_statistics():
    torch.manual_seed(0)
    f = torch.randn(8, 30, 2, 2)
    per = DSAHead(30, 3, 3, adapter_widths=(6,), noise_factor=0.0, bn_momentum=1.0)
    shared = DSAHead(
        30, 3, 3, adapter_widths=(6,), noise_factor=0.0, bn_momentum=1.0, head_bn="shared"
    )
    shared.load_state_dict(per.state_dict(), strict=False)
    per.train()(f)
    shared.train()(f)
    with torch.no_grad():
        z = per.pre(f)
        means = [per.head_features(z, s).mean(dim=(0, 2, 3)) for s in range(3)]
    for s in range(3):  # one BN per head keeps each head's own statistics
        assert torch.allclose(per.bns[s].running_mean, means[s], atol=1e-5)
    # the shared BN ends with the last head's statistics (momentum 1), wrong for heads 0 and 1
    assert torch.allclose(shared.bn.running_mean, means[2], atol=1e-5)
    assert not torch.allclose(shared.bn.running_mean, means[0], atol=1e-3)


def test_pose_variant_masks_and_two_conv_adapter():
    head = DSAHead(50, 4, 3, expand=False, output="heatmap", noise_factor=0.0).eval()
    assert head.expanded_channels == 50 and head.shared_channels == 50 - 15
    assert head.adapters[2].widths == (35, 35 + 20, 35)
    z = head.pre(torch.randn(2, 50, 4, 4))
    h = head.head_features(z, 1)
    assert h.shape == (2, 50, 4, 4)
    assert h[:, :5].abs().sum() == 0 and h[:, 10:15].abs().sum() == 0
    assert torch.allclose(h[:, 5:10], z[:, 5:10])
    assert head(torch.randn(2, 50, 4, 4)).logits[0].shape == (2, 4, 4, 4)


def test_gradients_reach_each_head_and_blank_head_gets_none():
    torch.manual_seed(0)
    model = DSAModel(
        "small_cnn", 10, heads=5, in_chans=1, input_size=8, adapter_widths=(8, 8), noise_factor=0.0
    )
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    loss = sum(torch.nn.functional.cross_entropy(z, y) for z in model(x))
    loss.backward()
    for s in range(5):
        assert model.head.fcs[s].weight.grad.abs().sum() > 0
        assert model.head.adapters[s].convs()[0].weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    step = 7  # blank head 7 mod 5 = 2
    supervised_loss(model(x), y, step, blank_num=1).backward()
    head = model.head
    blank = [head.fcs[2], head.adapters[2], head.bns[2]]
    for mod in blank:
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in mod.parameters())
    for s in (0, 1, 3, 4):
        assert head.fcs[s].weight.grad.abs().sum() > 0


def test_baselines_and_timm_backbone():
    f = torch.randn(2, 16, 3, 3)
    assert len(SingleHead(16, 5)(f).logits) == 1
    mhe = MultiHeadEnsemble(16, 5, 4)
    assert len(mhe(f).logits) == 4
    model = DSAModel("resnet18", 10, heads=3, adapter_widths=(32,), input_size=32)
    assert model.head.in_channels == 512
    out = model(torch.rand(2, 3, 32, 32))
    assert len(out) == 3 and out[0].shape == (2, 10)
    cbe = DSAModel("small_cnn", 10, heads=3, head_type="cbe", in_chans=1, input_size=8)
    assert cbe.head.adapters is None


def test_vit_tokens_become_a_grid():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0)
    model = DSAModel(vit, 10, heads=2, adapter_widths=(16,), input_size=32)
    assert model.features(torch.rand(1, 3, 32, 32)).shape == (1, 192, 2, 2)
    assert model(torch.rand(2, 3, 32, 32))[1].shape == (2, 10)


def test_unknown_backbone_is_a_user_error():
    from labcore.cli import UserError

    with pytest.raises(UserError, match="unknown backbone"):
        DSAModel("no_such_net_xyz", 10)
