"""The bench's measurements at toy sizes, its claims' thresholds and directions, its plots."""

import pytest

from n2gnn import bench


def test_tensor_peaks_scale_linearly_for_n2_and_quadratically_for_dense(monkeypatch):
    monkeypatch.setitem(bench.SIZES, "quick", {"n2": [512, 2048], "dense": [512, 2048]})
    sc = bench.scaling(quick=True, repeats=1)
    assert sc["memory_method"] == "tensors" and sc["widths"] == bench.WIDTHS["quick"]
    n2 = sc["n2"][2048]["peak_bytes"] / sc["n2"][512]["peak_bytes"]
    dense = sc["dense"][2048]["peak_bytes"] / sc["dense"][512]["peak_bytes"]
    assert 3.0 <= n2 <= 5.0  # 4× nodes: linear, plus the fixed pseudo-node part
    assert 14.0 <= dense <= 16.5  # the n×n ψ dominates
    # the dense ψ alone holds an n×n float32 matrix
    assert sc["dense"][2048]["peak_bytes"] >= 2048 * 2048 * 4
    assert all(r["seconds"] > 0 for r in (*sc["n2"].values(), *sc["dense"].values()))


def fake_scaling(mode="quick"):
    def rows(sizes, mem, sec):
        return {n: {"peak_bytes": mem(n), "seconds": sec(n)} for n in sizes}

    return {
        "mode": mode,
        "widths": bench.WIDTHS[mode],
        "memory_method": "tensors",
        "n2": rows(bench.SIZES[mode]["n2"], lambda n: 1000 * n + 10**6, lambda n: n * 1e-5),
        "dense": rows(bench.SIZES[mode]["dense"], lambda n: 4 * n * n, lambda n: n * n * 1e-8),
    }


def test_claims_carry_preregistered_thresholds_and_directions():
    params = {"n2_molpcba": {1: 10, 6: 10, 12: 10}, "n2_molpcba_official_count": {6: 12},
              "gin_5x300": 20}  # fmt: skip
    cl, checks = bench.claims(fake_scaling(), params)
    mem = next(c for c in cl if c.claim.startswith("N² peak"))
    assert mem.unit == "x" and mem.threshold == 5.0 and mem.higher_is_better is False
    assert mem.value == pytest.approx((1000 * 65536 + 1e6) / (1000 * 16384 + 1e6))
    dense = next(c for c in cl if c.claim.startswith("dense"))
    assert dense.value == pytest.approx(16.0) and dense.threshold == 12.0 and dense.higher_is_better
    assert dense.met is True and mem.met is True
    time = next(c for c in cl if c.claim.startswith("N² forward time"))
    assert time.value == pytest.approx(4.0) and time.met is True
    assert all(c.as_dict()["threshold"] is not None for c in cl if c.unit == "x")
    assert len(checks) == sum(c.threshold is not None for c in cl) and all(checks.values())


def test_a_claim_over_its_threshold_is_reported_missed():
    sc = fake_scaling()
    sc["n2"][65536]["peak_bytes"] = 6 * sc["n2"][16384]["peak_bytes"]  # 6× per 4× nodes
    params = {"n2_molpcba": {1: 10, 6: 10, 12: 10}, "n2_molpcba_official_count": {6: 12},
              "gin_5x300": 20}  # fmt: skip
    cl, checks = bench.claims(sc, params)
    mem = next(c for c in cl if c.claim.startswith("N² peak"))
    assert mem.met is False and checks[mem.claim] is False


def test_plots_are_written_log_log(tmp_path):
    paths = bench.plot_scaling(fake_scaling(), tmp_path)
    assert sorted(p.name for p in paths) == ["n2gnn_bench_memory.png", "n2gnn_bench_time.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
