"""The blockwise consistency score equals the dense (official) one; attribute score by hand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rcpmod.score import (
    attribute_score,
    consistency_score,
    consistency_score_against,
    consistency_score_dense,
    fuse,
    minmax,
)


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


@pytest.mark.parametrize("blocks", [(1, 3), (7, 5), (64, 1000), (2048, 8192)])
def test_chunked_equals_dense(blocks):
    ha, hb = _unit(37, 5, 0), _unit(37, 5, 1)
    ref = consistency_score_dense(ha, hb)
    got = consistency_score(ha, hb, 0.5, *blocks)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_chunked_equals_dense_small_temperature_and_zero_rows():
    ha, hb = _unit(20, 4, 2), _unit(20, 4, 3)
    ha[3] = 0.0  # a zero latent normalises to zero: its logits are 0
    ref = consistency_score_dense(ha, hb, 0.05)
    torch.testing.assert_close(consistency_score(ha, hb, 0.05, 6, 9), ref, rtol=1e-10, atol=1e-10)


def test_query_slices_partition_the_score():
    ha, hb = _unit(30, 4, 4), _unit(30, 4, 5)
    full = consistency_score(ha, hb, 0.5, 4, 7)
    parts = torch.cat([consistency_score(ha, hb, 0.5, 4, 7, queries=slice(s, s + 11))
                       for s in range(0, 30, 11)])  # fmt: skip
    torch.testing.assert_close(parts, full)


def test_score_against_reference_set_by_hand():
    ref_a, ref_b = _unit(9, 3, 6), _unit(9, 3, 7)
    qa, qb = _unit(2, 3, 8), _unit(2, 3, 9)
    ref = torch.cat([ref_a, ref_b])
    got = consistency_score_against(qa, qb, ref, 0.5, 1, 4)
    for i in range(2):
        pos = float(qa[i] @ qb[i]) / 0.5
        la = -pos + np.log(np.exp(pos) + np.exp((ref @ qa[i]).numpy() / 0.5).sum())
        lb = -pos + np.log(np.exp(pos) + np.exp((ref @ qb[i]).numpy() / 0.5).sum())
        assert got[i].item() == pytest.approx((la + lb) / 2, rel=1e-12)


def test_attribute_score_missing_view_rule():
    err_a = np.array([1.0, 3.0, 5.0, 99.0])  # sample 3 misses view a (its error is ignored)
    err_b = np.array([2.0, 4.0, -7.0, 6.0])  # sample 2 misses view b
    pa = np.array([True, True, True, False])
    pb = np.array([True, True, False, True])
    s, bounds = attribute_score(err_a, err_b, pa, pb)
    ea = np.array([0.0, 0.5, 1.0])  # over samples present in a: min 1, max 5
    eb = np.array([0.0, 0.5, 1.0])  # over samples present in b: 2, 4, 6
    expected = [ea[0] + eb[0], ea[1] + eb[1], ea[2] + ea[2], eb[2] + eb[2]]
    np.testing.assert_allclose(s, expected)
    assert bounds == ((1.0, 5.0), (2.0, 6.0))


def test_fuse_weights_the_reconstruction_term():
    att, con = np.array([0.0, 2.0, 4.0]), np.array([1.0, 1.0, 3.0])
    np.testing.assert_allclose(fuse(att, con, 0.25), 0.25 * minmax(att) + np.array([0, 0, 1.0]))
    assert (minmax(np.ones(3)) == 0).all()


def test_score_memory_is_linear_in_n():
    """The blockwise score never holds more than a block of similarities: the peak of
    intermediate tensors at n = 4000 is far below the 2n × 2n matrix."""
    from labcore.memory import peak_memory

    ha, hb = _unit(4000, 8, 10), _unit(4000, 8, 11)
    peak = peak_memory(lambda: consistency_score(ha, hb, 0.5, 256, 1024), method="tensors")
    dense_matrix = (2 * 4000) ** 2 * 8
    assert peak.peak_bytes < dense_matrix / 20
