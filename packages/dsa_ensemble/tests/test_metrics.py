"""Ensemble metrics against brute force."""

import numpy as np
import pytest
import torch

from dsa_ensemble import ensemble_metrics, pairwise_diversity
from dsa_ensemble.metrics import agreement_weighted_logits


def test_metrics_brute_force():
    torch.manual_seed(0)
    z = torch.randn(3, 50, 4)
    y = torch.randint(0, 4, (50,))
    m = ensemble_metrics(z, y)
    p = z.softmax(-1).mean(0).double().numpy()
    yy = y.numpy()
    assert m["accuracy"] == pytest.approx((p.argmax(1) == yy).mean())
    assert m["nll"] == pytest.approx(-np.log(p[np.arange(50), yy]).mean(), rel=1e-6)
    onehot = np.eye(4)[yy]
    assert m["brier"] == pytest.approx(((p - onehot) ** 2).sum(1).mean(), rel=1e-6)
    conf, corr = p.max(1), (p.argmax(1) == yy)
    ece = 0.0
    for b in range(15):
        sel = (conf > b / 15) & (conf <= (b + 1) / 15)
        if sel.any():
            ece += sel.mean() * abs(corr[sel].mean() - conf[sel].mean())
    assert m["ece"] == pytest.approx(ece, abs=1e-9)
    heads = [(z[s].argmax(1) == y).float().mean().item() for s in range(3)]
    assert m["per_head_accuracy"] == pytest.approx(heads)
    assert m["ensemble_gain"] == pytest.approx(m["accuracy"] - np.mean(heads))


def test_diversity_identical_and_different_heads():
    p = torch.rand(20, 5).softmax(-1)
    same = pairwise_diversity(torch.stack([p, p, p]))
    assert same["head_correlation"] == pytest.approx(1.0) and same["head_disagreement"] == 0
    q = torch.rand(20, 5).softmax(-1)
    d = pairwise_diversity(torch.stack([p, q]))
    ref = np.corrcoef(p.reshape(-1).numpy(), q.reshape(-1).numpy())[0, 1]
    assert d["head_correlation"] == pytest.approx(ref, rel=1e-5)
    assert d["head_disagreement"] == pytest.approx((p.argmax(1) != q.argmax(1)).float().mean())


def test_agreement_weighted_ensemble_picks_the_central_head():
    z = torch.zeros(3, 4, 2)
    z[0, :, 0] = 1.0  # heads 0 and 1 agree on class 0, head 2 says class 1
    z[1, :, 0] = 1.0
    z[2, :, 1] = 1.5  # mean logits still favour class 0
    w_logits = agreement_weighted_logits(z, batch_size=4)
    counts = torch.tensor([4.0, 4.0, 0.0])
    w = torch.softmax(counts, 0)
    assert torch.allclose(w_logits, (w[:, None, None] * z).sum(0))
