"""The DPCML model and loss against direct computations."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dpcml import DPCML, DPCMLConfig, adaptive_vector_counts, dcrs_code, dcrs_paper
from dpcml.losses import hard_negative_hinge, user_diversity


def _shrink_items(m):
    """Item norms <= 0.5, so the lookup's max_norm renormalisation is a no-op."""
    with torch.no_grad():
        w = m.item_embeddings.weight
        w.mul_(0.5 / w.norm(dim=1, keepdim=True).max())
    return m


def _model(**kw):
    torch.manual_seed(0)
    cfg = DPCMLConfig(**{"dim": 8, "n_vectors": 3, **kw})
    return _shrink_items(DPCML(20, 30, cfg))


def test_scores_are_min_squared_distance_brute_force():
    m = _model()
    users, items = torch.tensor([0, 3, 7]), torch.tensor([5, 5, 29])
    got = m.distances(users, items)
    g = m.user_embeddings.weight.detach().view(20, 3, 8)
    v = m.item_embeddings.weight.detach()
    for b in range(3):
        want = min(float(((g[users[b], c] - v[items[b]]) ** 2).sum()) for c in range(3))
        assert got[b].item() == pytest.approx(want, rel=1e-6)
    full = -m.full_scores(users)
    assert full.shape == (3, 30)
    torch.testing.assert_close(full[torch.arange(3), items], got.detach(), rtol=1e-5, atol=1e-6)


def test_c1_eta0_equals_direct_cml_loss():
    m = _model(n_vectors=1, dcrs_weight=0.0, margin=1.5)
    u, p, n = torch.tensor([1, 2, 2, 9]), torch.tensor([0, 4, 4, 7]), torch.tensor([3, 5, 6, 8])
    loss = m(u, p, n)
    gu = m.user_embeddings.weight[u]
    gp, gn = m.item_embeddings.weight[p], m.item_embeddings.weight[n]
    cml = F.relu(1.5 + (gu - gp).square().sum(1) - (gu - gn).square().sum(1)).sum()
    torch.testing.assert_close(loss, cml)
    # same gradients as the direct CML loss
    (ga,) = torch.autograd.grad(loss, m.user_embeddings.weight)
    m2 = _model(n_vectors=1, dcrs_weight=0.0, margin=1.5)
    gu = m2.user_embeddings.weight[u]
    gp, gn = m2.item_embeddings.weight[p], m2.item_embeddings.weight[n]
    cml = F.relu(1.5 + (gu - gp).square().sum(1) - (gu - gn).square().sum(1)).sum()
    (gb,) = torch.autograd.grad(cml, m2.user_embeddings.weight)
    torch.testing.assert_close(ga, gb)


def test_multi_vector_triplet_loss_by_hand():
    m = _model(dcrs_weight=0.0, margin=0.7)
    u, p, n = torch.tensor([4]), torch.tensor([2]), torch.tensor([11])
    g = m.user_embeddings.weight.detach().view(20, 3, 8)[4]
    vp, vn = m.item_embeddings.weight.detach()[2], m.item_embeddings.weight.detach()[11]
    sp_ = min(float((g[c] - vp).square().sum()) for c in range(3))
    sn = min(float((g[c] - vn).square().sum()) for c in range(3))
    assert m(u, p, n).item() == pytest.approx(max(0.0, 0.7 + sp_ - sn), rel=1e-6)


def test_dcrs_code_hand_computation():
    # one user, C = 2, vectors e1 and 0.5 e1: d12 = 0.25; U·C² = 4 entries
    g = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])
    assert dcrs_code(g, 0.5, 1.0).item() == pytest.approx(2 * (0.5 - 0.25) / 4)
    assert dcrs_code(g, 0.0, 0.1).item() == pytest.approx(2 * (0.25 - 0.1) / 4)
    assert dcrs_code(g, 0.1, 0.3).item() == 0.0
    # two users, C = 3: brute force over ordered pairs
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    total = 0.0
    for u in range(2):
        for a in range(3):
            for b in range(3):
                if a != b:
                    d = float(((x[u, a] - x[u, b]) ** 2).sum())
                    total += max(0, 3.0 - d) + max(0, d - 6.0)
    got = dcrs_code(torch.tensor(x), 3.0, 6.0).item()
    assert got == pytest.approx(total / (2 * 9))


def test_dcrs_paper_form():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5))
    deltas = []
    for u in range(3):
        s = sum(((x[u, a] - x[u, b]) ** 2).sum() for a in range(4) for b in range(4))
        deltas.append(s / (2 * 4 * 3))
    want = np.mean([max(0, 4.0 - d) + max(0, d - 5.0) for d in deltas])
    assert dcrs_paper(torch.tensor(x), 4.0, 5.0).item() == pytest.approx(want)
    np.testing.assert_allclose(user_diversity(torch.tensor(x)).numpy(), deltas)


def test_forward_adds_weighted_dcrs_only_when_active():
    m = _model(dcrs_weight=10.0, delta1=0.05, delta2=0.25)
    u, p, n = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])
    pref = m.preference_loss(u, p, n)
    dcrs = dcrs_code(m.user_embeddings.weight.view(20, 3, 8), 0.05, 0.25)
    torch.testing.assert_close(m(u, p, n), pref + 10.0 * dcrs)
    assert dcrs.item() > 0  # tiny init vectors are closer than δ1
    off = _model(dcrs_weight=10.0, delta1=0.3, delta2=0.2)  # m1 >= m2 switches it off
    torch.testing.assert_close(off(u, p, n), off.preference_loss(u, p, n))


def test_unit_norm_after_an_optimiser_step():
    m = _model()
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    loss = m(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8]))
    loss.backward()
    opt.step()
    m.project_users_()
    norms = m.user_vectors().norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_item_lookup_renormalises_to_max_norm():
    torch.manual_seed(0)
    m = DPCML(5, 40, DPCMLConfig(dim=4, n_vectors=2))
    with torch.no_grad():
        m.item_embeddings.weight.mul_(3.0)
    assert (m.item_embeddings.weight.norm(dim=-1) > 1.5).any()
    before = m.item_embeddings.weight.detach().clone()
    m.eval()  # eval: rescaled rows, table untouched
    norms = m.item_vectors(torch.arange(40)).norm(dim=-1)
    assert (norms <= 1.0 + 1e-5).all() and norms.max() > 0.999
    torch.testing.assert_close(m.item_embeddings.weight.detach(), before)
    m.train()  # training: the table itself is rescaled, as nn.Embedding(max_norm=1) does
    torch.testing.assert_close(m.item_vectors(torch.arange(40)).norm(dim=-1), norms)
    stored = m.item_embeddings.weight.detach().norm(dim=-1)
    assert (stored <= 1.0 + 1e-5).all()
    ref = torch.nn.Embedding.from_pretrained(before.clone(), freeze=False, max_norm=1.0)
    torch.testing.assert_close(ref(torch.arange(40)), m.item_vectors(torch.arange(40)))


def test_hard_loss_uses_the_closest_candidate():
    m = _model(dcrs_weight=0.0, margin=2.0)
    u, p = torch.tensor([0, 5]), torch.tensor([1, 2])
    cand = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]])
    d = m.distances(u.repeat_interleave(4), cand.reshape(-1)).view(2, 4)
    closest = cand[torch.arange(2), d.argmin(1)]
    torch.testing.assert_close(m(u, p, cand), m(u, p, closest))
    # and not the farthest one
    farthest = cand[torch.arange(2), d.argmax(1)]
    assert m(u, p, cand).item() > m(u, p, farthest).item()


def test_hard_reconstructions():
    d_pos = torch.tensor([0.5, 1.0])
    d_neg = torch.tensor([[0.2, 0.9, 3.0, 1.5], [2.0, 0.1, 0.4, 5.0]])
    h = torch.relu(1.0 + d_pos[:, None] - d_neg)
    top = hard_negative_hinge(d_pos, d_neg, 1.0, "topk", beta=0.5)  # the 2 smallest
    want = (h[0, [0, 1]].mean() + h[1, [1, 2]].mean()).item()
    assert top.item() == pytest.approx(want)
    soft = hard_negative_hinge(d_pos, d_neg, 1.0, "softmax", temperature=0.5)
    w = torch.softmax(-d_neg / 0.5, 1)
    assert soft.item() == pytest.approx((w * h).sum().item())
    # τ -> 0 recovers the hardest candidate
    cold = hard_negative_hinge(d_pos, d_neg, 1.0, "softmax", temperature=1e-4)
    assert cold.item() == pytest.approx(hard_negative_hinge(d_pos, d_neg, 1.0).item(), rel=1e-5)


def test_adaptive_vector_counts_and_mask():
    np.testing.assert_array_equal(adaptive_vector_counts([1, 2, 3, 4, 9, 100], 5),
                                  [1, 1, 1, 2, 3, 5])  # fmt: skip
    torch.manual_seed(0)
    cfg = DPCMLConfig(dim=4, n_vectors=3, adaptive=True)
    counts = np.array([1, 3, 2])
    m = _shrink_items(DPCML(3, 6, cfg, vector_counts=counts))
    # user 0 only owns vector 0: its score ignores vectors 1, 2
    g = m.user_vectors(torch.tensor([0]))[0].detach()
    v = m.item_embeddings.weight.detach()[2]
    want = float((g[0] - v).square().sum())
    assert m.distances(torch.tensor([0]), torch.tensor([2])).item() == pytest.approx(want, 1e-5)
    assert (m.assignments(torch.tensor([0, 0]), torch.tensor([1, 4])) == 0).all()
    # DCRS only over owned pairs: user 0 has none, user 2 one pair (two ordered entries)
    x = m.user_vectors().detach()
    d = lambda u, a, b: float((x[u, a] - x[u, b]).square().sum())  # noqa: E731
    pen = lambda t: max(0, 0.05 - t) + max(0, t - 0.25)  # noqa: E731
    tot = sum(pen(d(1, a, b)) for a in range(3) for b in range(3) if a != b) + 2 * pen(d(2, 0, 1))
    want = tot / (1 + 9 + 4)
    assert m.dcrs_loss().item() == pytest.approx(want, rel=1e-5)
    assert math.isnan(m.diversity()[0].item())


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="sampling"):
        DPCMLConfig(sampling="random")
    with pytest.raises(ValueError, match="vector_counts"):
        DPCML(3, 4, DPCMLConfig(dim=2, n_vectors=2), vector_counts=[1, 0, 2])


def test_paper_form_of_dcrs_through_the_model_and_config_roundtrip():
    m = _model(dcrs="paper", dcrs_weight=3.0, delta1=0.5, delta2=0.9)
    u, p, n = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])
    want = m.preference_loss(u, p, n) + 3.0 * dcrs_paper(m.user_vectors(), 0.5, 0.9)
    torch.testing.assert_close(m(u, p, n), want)
    assert DPCMLConfig.from_dict(m.config.as_dict()) == m.config
