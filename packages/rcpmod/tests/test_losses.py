"""Losses against brute-force references (loops over anchors), gradients, the w(t) schedule."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rcpmod.losses import koleo, nt_xent, nt_xent_per_row, reconstruction, spreading_weight, triplet


@pytest.fixture(autouse=True)
def _float64():
    """The method runs in float64; set it for these tests only, never for the whole session."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


def _brute_nt_xent(ha, hb, mem, tau):
    """Per anchor: -log(e^{pos} / (e^{pos} + sum over 2N-2 batch negatives + memory)), a loop."""
    h = torch.cat([ha, hb]).tolist()
    m = [] if mem is None else mem.tolist()
    n = len(ha)
    out = []
    for r in range(2 * n):
        t = r + n if r < n else r - n
        dot = lambda u, v: sum(a * b for a, b in zip(u, v)) / tau  # noqa: E731
        pos = dot(h[r], h[t])
        neg = [dot(h[r], h[c]) for c in range(2 * n) if c not in (r, t)]
        neg += [dot(h[r], x) for x in m]
        out.append(-pos + math.log(math.exp(pos) + sum(math.exp(v) for v in neg)))
    return out


@pytest.mark.parametrize("n_mem", [0, 3])
def test_nt_xent_matches_brute_force(n_mem):
    ha, hb = _unit(5, 4, 0), _unit(5, 4, 1)
    mem = _unit(2 * n_mem, 4, 2) if n_mem else None
    got = nt_xent_per_row(ha, hb, mem, 0.5)
    ref = torch.tensor(_brute_nt_xent(ha, hb, mem, 0.5))
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nt_xent(ha, hb, mem, 0.5), ref.mean(), rtol=1e-12, atol=1e-12)


def test_nt_xent_equals_cross_entropy_with_positive_first():
    ha, hb, mem = _unit(6, 3, 3), _unit(6, 3, 4), _unit(4, 3, 5)
    n, h = 6, torch.cat([ha, hb])
    sim = h @ h.T / 0.5
    rows = []
    for r in range(2 * n):
        t = (r + n) % (2 * n)
        negs = [sim[r, c] for c in range(2 * n) if c not in (r, t)]
        rows.append(torch.stack([sim[r, t], *negs, *(h[r] @ mem.T / 0.5)]))
    logits = torch.stack(rows)
    ce = F.cross_entropy(logits, torch.zeros(2 * n, dtype=torch.long), reduction="sum") / (2 * n)
    torch.testing.assert_close(nt_xent(ha, hb, mem), ce)


def test_nt_xent_batched_over_leading_dim_is_mean_of_each():
    ha, hb = _unit(12, 4, 6).view(3, 4, 4), _unit(12, 4, 7).view(3, 4, 4)
    each = torch.stack([nt_xent(ha[k], hb[k]) for k in range(3)])
    torch.testing.assert_close(nt_xent(ha, hb), each.mean())


def test_nt_xent_gradcheck():
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, 3, requires_grad=True)
    m = torch.randn(2, 3, requires_grad=True)
    f = lambda a, b, m: nt_xent(F.normalize(a, dim=1), F.normalize(b, dim=1),  # noqa: E731
                                F.normalize(m, dim=1))  # fmt: skip
    assert torch.autograd.gradcheck(f, (a, b, m))


def test_koleo_and_triplet_brute_force():
    z = torch.randn(7, 3)
    zl = z.tolist()
    total = 0.0
    for i in range(7):
        j = max((k for k in range(7) if k != i), key=lambda k: np.dot(zl[i], zl[k]))
        d = math.dist([a + 1e-6 for a in zl[i]], zl[j])  # pairwise_distance adds eps to x - y
        total += -math.log(7 * d)
    assert koleo(z).item() == pytest.approx(total / 7, rel=1e-9)
    zp, zn = torch.randn(7, 3), torch.randn(7, 3)
    ref = np.mean(
        [
            max(
                0.0,
                math.dist([a + 1e-6 for a in zl[i]], zp[i].tolist())
                - math.dist([a + 1e-6 for a in zl[i]], zn[i].tolist()),
            )
            for i in range(7)
        ]
    )
    assert triplet(z, zp, zn).item() == pytest.approx(ref, rel=1e-9)
    assert koleo(z[:1]).item() == 0.0 and triplet(z[:0], zp[:0], zn[:0]).item() == 0.0


def test_reconstruction_sums_features_means_rows():
    x, xh = torch.rand(4, 3), torch.rand(4, 3)
    assert reconstruction(x, xh).item() == pytest.approx(((x - xh) ** 2).sum().item() / 4)


def test_spreading_weight_schedule():
    # official linear_scheduler([wm], [final], S, warmup_iter=100): linspace(0, wm, 100) then
    # linspace(wm, final, S - 100)
    assert spreading_weight(0, 0.02, 0.2, 400) == 0.0
    assert spreading_weight(99, 0.02, 0.2, 400) == pytest.approx(0.02)
    assert spreading_weight(50, 0.02, 0.2, 400) == pytest.approx(0.02 * 50 / 99)
    assert spreading_weight(100, 0.02, 0.2, 400) == pytest.approx(0.02)
    assert spreading_weight(399, 0.02, 0.2, 400) == pytest.approx(0.2)
    assert spreading_weight(5000, 0.02, 0.2, 400) == 0.2
    # every official run ends by epoch 130 (Fashion 400 aside): w stays at most warmup_max
    assert max(spreading_weight(e, 0.02, 0.4, 400) for e in range(90)) < 0.02
