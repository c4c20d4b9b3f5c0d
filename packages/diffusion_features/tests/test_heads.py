import pytest
import torch

from diffusion_features.data import synthetic_shapes
from diffusion_features.heads import (
    LinearProbe,
    MLPEnsemble,
    label_scarce_protocol,
    nn_correspondence,
    pck,
    rare_labels_ignored,
    train_conv_head,
)
from labcore.cli import UserError


def _onehot_feats(labels, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    return f + noise * torch.randn(f.shape, generator=g)


def test_synthetic_shapes_and_chance():
    from labcore.metrics import ConfusionMatrix

    x, y = synthetic_shapes(32, seed=0)
    assert tuple(x.shape) == (32, 3, 64, 64) and tuple(y.shape) == (32, 64, 64)
    assert set(torch.unique(y).tolist()) == {0, 1, 2} and 0 <= x.min() and x.max() <= 1
    chance = ConfusionMatrix(3).update(torch.zeros_like(y), y).miou()
    assert 0.2 < chance < 0.33  # the spec's ~0.275
    assert torch.equal(synthetic_shapes(2, seed=1)[0], synthetic_shapes(2, seed=1)[0])


def test_linear_probe_separable_and_chance():
    _, y = synthetic_shapes(8, size=32, seed=0)
    probe = LinearProbe(n_pixels=4000).fit(_onehot_feats(y[:4]), y[:4])
    assert probe.miou(_onehot_feats(y[4:], seed=1), y[4:], 3) > 0.95
    noise = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert LinearProbe(n_pixels=4000).fit(noise[:4], y[:4]).miou(noise[4:], y[4:], 3) < 0.4


def test_rare_labels_rule():
    y = torch.zeros(1, 10, 10, dtype=torch.long)
    y[0, :2, :9] = 1  # 18 pixels < 20
    y[0, 5:, 5:] = 2  # 25 pixels
    out = rare_labels_ignored(y)
    assert (out == 255).sum() == 18 and (out == 2).sum() == 25


def test_mlp_ensemble_learns_and_votes():
    _, y = synthetic_shapes(6, size=16, seed=0)
    f = _onehot_feats(y)
    ens = MLPEnsemble(3, n_models=3, max_epochs=15).fit(f[:3], y[:3])
    assert len(ens.models_) == 3 and ens.models_[0][0].out_features == 128
    votes = ens.votes(f[3:], (16, 16))
    assert torch.equal(votes.sum(1), torch.full((3, 16, 16), 3.0, dtype=torch.float64))
    assert ens.miou(f[3:], y[3:]) > 0.8
    assert MLPEnsemble(30).n_models == 10
    with pytest.raises(UserError):
        MLPEnsemble(0)


def test_label_scarce_protocol_reshuffles():
    _, y = synthetic_shapes(6, size=16, seed=0)
    f = _onehot_feats(y)
    seen = []

    class Head:
        def fit(self, x, lab):
            seen.append(lab.sum().item())
            return self

        def miou(self, x, lab):
            return 0.5

    res = label_scarce_protocol(f, y, 2, lambda r: Head(), runs=3)
    assert res["miou_mean"] == 0.5 and res["miou_std"] == 0 and len(set(seen)) > 1
    with pytest.raises(UserError):
        label_scarce_protocol(f, y, 6, lambda r: Head())


def test_nn_correspondence_exact_on_identical_features_and_pck():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(16, 8, 8, generator=g)
    kps = torch.tensor([[3.0, 5.0], [10.0, 12.0], [28.0, 17.0]])
    pred = nn_correspondence(feat, feat, kps, (32, 32), (32, 32))
    assert torch.allclose(pred, kps)
    # a shifted target: features moved by 4 px on a 32² image
    shifted = torch.roll(
        torch.nn.functional.interpolate(feat[None], size=32, mode="bilinear")[0], shifts=4, dims=2
    )
    pred = nn_correspondence(
        torch.nn.functional.interpolate(feat[None], size=32, mode="bilinear")[0],
        shifted,
        kps[:2],
        (32, 32),
        (32, 32),
    )
    assert torch.allclose(pred, kps[:2] + torch.tensor([4.0, 0.0]))
    assert pck(torch.tensor([[0.0, 0.0], [10.0, 0.0]]), torch.zeros(2, 2), 0.1, 50) == 0.5


def test_conv_head_training_reduces_loss():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(8, 16, 16, generator=g)
    kps = torch.rand(6, 2, generator=g) * 60
    pair = {
        "src_feat": feat,
        "trg_feat": feat + 0.5 * torch.randn(feat.shape, generator=g),
        "src_kps": kps,
        "trg_kps": kps,
        "src_size": (64, 64),
        "trg_size": (64, 64),
    }
    head = train_conv_head([pair], 8, steps=30, lr=5e-3)
    assert head.conv.bias is None and tuple(head.conv.weight.shape) == (8, 8, 3, 3)
