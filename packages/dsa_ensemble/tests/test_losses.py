"""Objectives against hand computations (numpy) on small batches."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dsa_ensemble import losses as L


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_blank_head_rotation():
    assert [L.blank_heads(t, 5) for t in range(6)] == [[0], [1], [2], [3], [4], [0]]
    assert L.blank_heads(4, 5, blank_num=2) == [4]  # the code does not wrap
    assert L.blank_heads(1, 5, blank_num=2) == [1, 2]
    assert L.blank_heads(3, 1) == []


def test_supervised_loss_is_the_mean_over_non_blank_heads():
    torch.manual_seed(0)
    z = [torch.randn(6, 4) for _ in range(5)]
    y = torch.randint(0, 4, (6,))
    ref = np.mean([F.cross_entropy(z[s], y).item() for s in (0, 1, 2, 4)])
    assert L.supervised_loss(z, y, step=8).item() == pytest.approx(ref, rel=1e-6)


def test_sat_update_and_mask_match_hand_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)) * 2
    q = _softmax(logits)
    k, lam = 3, 0.999
    sat = L.SATState.create(k, lam)
    sat.update(torch.tensor(q, dtype=torch.float32))
    tau = lam / k + (1 - lam) * q.max(1).mean()
    p = lam * np.full(k, 1 / k) + (1 - lam) * q.mean(0)
    hist = np.bincount(q.argmax(1), minlength=k) / 6
    h = lam * np.full(k, 1 / k) + (1 - lam) * hist
    assert sat.tau.item() == pytest.approx(tau, rel=1e-6)
    np.testing.assert_allclose(sat.p_model.numpy(), p, rtol=1e-6)
    np.testing.assert_allclose(sat.label_hist.numpy(), h, rtol=1e-6)
    mask = sat.mask(torch.tensor(q, dtype=torch.float32), taut_alpha=0.9).numpy()
    ref = (q.max(1) >= 0.9 * tau * (p / p.max())[q.argmax(1)]).astype(np.float32)
    np.testing.assert_array_equal(mask, ref)


def test_saf_loss_matches_hand_computation_and_sign_option():
    rng = np.random.default_rng(1)
    logits_s = rng.normal(size=(8, 4))
    mask = np.array([1, 0, 1, 1, 0, 1, 1, 1], dtype=np.float32)
    p_model = np.array([0.4, 0.3, 0.2, 0.1])
    hist = np.array([0.25, 0.25, 0.3, 0.2])
    ps = _softmax(logits_s[mask > 0])
    hs = np.bincount(ps.argmax(1), minlength=4) / len(ps)
    inv = np.where(hs > 0, 1 / np.where(hs > 0, hs, 1), 0.0)
    mp = p_model / hist
    mp /= mp.sum()
    ms = ps.mean(0) * inv
    ms /= ms.sum()
    ref = -(mp * np.log(ms + 1e-12)).sum()
    args = (
        torch.tensor(mask),
        torch.tensor(logits_s, dtype=torch.float32),
        torch.tensor(p_model, dtype=torch.float32),
        torch.tensor(hist, dtype=torch.float32),
    )
    assert L.saf_loss(*args).item() == pytest.approx(ref, rel=1e-5)
    assert L.saf_loss(*args, sign="code").item() == pytest.approx(-ref, rel=1e-5)
    empty = L.saf_loss(torch.zeros(8), *args[1:])
    assert empty.item() == 0.0


def test_count_threshold_ramp():
    got = [L.count_threshold(e) for e in (0, 23, 24, 48, 49, 200)]
    assert got == [2, 2, 3, 3, 4, 4]  # int(2 + 2 * min((e + 1) / 50, 1))


def test_ensemble_pseudo_label_code_vs_masked_and_count_threshold():
    # head 0 (firing) says class 0; heads 1, 2 (not firing) say class 1 strongly
    z = [torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 5.0]]), torch.tensor([[0.0, 5.0]])]
    masks = torch.tensor([[1.0], [0.0], [1.0]])
    lab_code, keep = L.ensemble_pseudo_label(z, masks, count_thr=2, mode="code")
    assert lab_code.item() == 1 and keep.item() == 1.0  # all-head sum
    masks2 = torch.tensor([[1.0], [0.0], [0.0]])
    lab_m, keep2 = L.ensemble_pseudo_label(z, masks2, count_thr=2, mode="masked")
    assert lab_m.item() == 0 and keep2.item() == 0.0  # only 1 head fired < 2


def test_ensemble_loss_reference():
    torch.manual_seed(0)
    z = [torch.randn(5, 3) for _ in range(3)]
    lab = torch.tensor([0, 1, 2, 1, 0])
    keep = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    ref = np.mean(
        [(F.cross_entropy(z[s], lab, reduction="none") * keep).mean().item() for s in (0, 2)]
    )
    assert L.ensemble_loss(z, lab, keep, step=1).item() == pytest.approx(ref, rel=1e-6)


def test_max_correlation_and_decorrelation_against_numpy():
    torch.manual_seed(0)
    z = [torch.randn(7, 4) for _ in range(2)]
    y = torch.tensor([0, 1, 2, 3, 1, 2, 0])
    refs = []
    for zz in z:
        p = _softmax(zz.numpy())[np.arange(7), y.numpy()]
        refs.append(1 - np.corrcoef(p * (y.numpy() + 1), y.numpy() + 1)[0, 1])
    assert L.max_correlation_loss(z, y).item() == pytest.approx(np.mean(refs), rel=1e-5)
    priv = [torch.randn(3, 2, 2, 2) for _ in range(3)]
    flat = [p.reshape(-1).numpy() for p in priv]
    ref = np.mean([abs(np.corrcoef(flat[i], flat[(i + 1) % 3])[0, 1]) for i in range(3)])
    assert L.feature_decorrelation_loss(priv).item() == pytest.approx(ref, rel=1e-5)
    a = [p.clone().requires_grad_() for p in priv]
    L.feature_decorrelation_loss(a).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in a)


def test_freematch_unlabeled_loss():
    torch.manual_seed(0)
    s, w = torch.randn(4, 3), torch.randn(4, 3)
    m = torch.tensor([1.0, 0.0, 1.0, 0.0])
    ref = (F.cross_entropy(s, w.argmax(1), reduction="none") * m).mean()
    assert L.freematch_unlabeled_loss(s, w, m).item() == pytest.approx(ref.item())
