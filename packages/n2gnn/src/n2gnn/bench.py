"""Scaling and parameter benchmarks (spec §4 B and E): N² vs a dense all-pairs ψ, and N² vs GIN."""

from __future__ import annotations

import statistics

import torch
from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

from labcore.memory import peak_memory
from labcore.runs import Claim, Timer
from n2gnn.baselines import dense_global_step, gin_molpcba_baseline
from n2gnn.model import N2Graph, N2Node, official_parameter_count

# Spec §4 B: eval forward, one step, np=256, avg degree 10; d=128, q=64, k=8; 32 input features
SCALING = dict(hidden=128, state=64, pieces=8, num_pseudo=256, num_steps=1, dropout=0.0)
FEATURES, AVG_DEGREE = 32, 10.0
MOLPCBA = dict(
    in_channels=9,
    edge_dim=3,
    out_channels=128,
    hidden=128,
    state=64,
    pieces=8,
    num_pseudo=32,
    dropout=0.3,
    class_pieces=8,
)
# node counts timed, and (second list) measured for peak memory in a fresh subprocess each
SIZES = {
    "quick": {
        "n2": ([4096, 16384, 65536, 131072], [16384, 65536, 131072]),
        "dense": ([2048, 4096, 8192], [2048, 8192]),
    },
    "full": {
        "n2": ([4096, 16384, 65536, 131072], [4096, 16384, 65536, 131072]),
        "dense": ([2048, 4096, 8192, 16384], [2048, 4096, 8192, 16384]),
    },
}
# Pre-registered (spec §4 B): per 4× nodes from 16k up, N² memory ≤ 5×, time ≤ 8×; dense ≥ 12×
THRESHOLDS = {"n2_mem_ratio_max": 5.0, "n2_time_ratio_max": 8.0, "dense_mem_ratio_min": 12.0}


def random_graph(n: int, avg_degree: float = AVG_DEGREE, features: int = FEATURES, seed: int = 0):
    """Uniform random undirected graph with ``n·avg_degree/2`` edges and Gaussian features."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, int(n * avg_degree / 2)), generator=g)
    ei = coalesce(to_undirected(remove_self_loops(ei)[0], num_nodes=n), num_nodes=n)
    return torch.randn(n, features, generator=g), ei


def _n2_model() -> N2Node:
    torch.manual_seed(0)
    return N2Node(in_channels=FEATURES, out_channels=4, **SCALING).eval()


def n2_forward_job(n: int) -> None:
    """Build a graph of ``n`` nodes and run one N² eval forward (memory subprocess entry point)."""
    x, ei = random_graph(n)
    model = _n2_model()
    with torch.no_grad():
        model(x, ei)


def _dense_inputs(n: int):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 64, generator=g), torch.randn(n, 128, generator=g), torch.randn(8)


def dense_forward_job(n: int) -> None:
    """The dense all-pairs ψ of N²'s form on ``n`` nodes (memory subprocess entry point)."""
    with torch.no_grad():
        dense_global_step(*_dense_inputs(n))


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        with Timer() as t:
            fn()
        times.append(t.elapsed)
    return statistics.median(times)


def scaling(quick: bool = True, repeats: int = 5, memory: bool = True) -> dict:
    """Forward seconds (median, after a warm-up) and peak RSS above baseline, by node count."""
    sizes = SIZES["quick" if quick else "full"]
    out: dict = {"n2": {}, "dense": {}}
    model = _n2_model()
    timed, measured = sizes["n2"]
    for n in timed:
        x, ei = random_graph(n)
        with torch.no_grad():
            out["n2"][n] = {"seconds": _median_time(lambda x=x, ei=ei: model(x, ei), repeats)}
        del x, ei
        if memory and n in measured:
            out["n2"][n]["peak_bytes"] = peak_memory(n2_forward_job, n).peak_bytes
    timed, measured = sizes["dense"]
    for n in timed:
        args = _dense_inputs(n)
        with torch.no_grad():
            fn = lambda args=args: dense_global_step(*args)  # noqa: E731
            out["dense"][n] = {"seconds": _median_time(fn, repeats)}
        del args
        if memory and n in measured:
            out["dense"][n]["peak_bytes"] = peak_memory(dense_forward_job, n).peak_bytes
    return out


def parameters() -> dict:
    """Parameter counts: N² molpcba config for L = 1, 6, 12 vs a stacked (unshared) version and
    PyG's GIN at the OGB baseline size, all counted as ``sum(p.numel())``."""
    out: dict = {"n2_molpcba": {}, "n2_molpcba_official_count": {}, "stacked_equivalent": {}}
    for L in (1, 6, 12):
        m = N2Graph(num_steps=L, **MOLPCBA)
        own = sum(p.numel() for p in m.parameters())
        cell = sum(p.numel() for p in m.cell.parameters())
        out["n2_molpcba"][L] = own
        out["n2_molpcba_official_count"][L] = official_parameter_count(m)
        out["stacked_equivalent"][L] = own + (L - 1) * cell  # L distinct cells instead of one
    out["gin_5x300"] = sum(p.numel() for p in gin_molpcba_baseline().parameters())
    return out


def ratio(table: dict, small: int, large: int, key: str) -> float:
    return table[large][key] / table[small][key]


def claims(sc: dict, params: dict) -> tuple[list[Claim], dict[str, bool]]:
    """Headline claims and the pre-registered checks."""
    n2, dense = sc["n2"], sc["dense"]
    d_small, d_large = 2048, 8192  # a 4× span measured in both modes
    cl = [
        Claim(
            "N² peak memory per 4× nodes (16k→64k), pre-registered ≤ 5×",
            "peak_bytes",
            n2[65536]["peak_bytes"],
            n2[16384]["peak_bytes"],
            "B",
        ),
        Claim(
            f"dense all-pairs ψ peak memory per 4× nodes ({d_small}→{d_large}), ≥ 12×",
            "peak_bytes",
            dense[d_large]["peak_bytes"],
            dense[d_small]["peak_bytes"],
            "B",
        ),
        Claim(
            "N² forward time per 4× nodes (16k→64k), pre-registered ≤ 8×",
            "seconds",
            n2[65536]["seconds"],
            n2[16384]["seconds"],
            "s",
        ),
        Claim(
            "N² eval forward at 131,072 nodes (peak RSS)",
            "peak_bytes",
            n2[131072]["peak_bytes"],
            None,
            "B",
        ),
        Claim(
            "N² eval forward at 131,072 nodes (time)", "seconds", n2[131072]["seconds"], None, "s"
        ),
        Claim(
            "N² full forward vs dense ψ kernel alone at 4,096 nodes",
            "seconds",
            n2[4096]["seconds"],
            dense[4096]["seconds"],
            "s",
        ),
        Claim(
            "N² molpcba-config params, L=12 vs L=1 (shared cell)",
            "params",
            params["n2_molpcba"][12],
            params["n2_molpcba"][1],
        ),
        Claim(
            "N² molpcba-config params (official count) vs PyG GIN 5×300",
            "params",
            params["n2_molpcba_official_count"][6],
            params["gin_5x300"],
        ),
    ]
    t = THRESHOLDS
    checks = {
        "N² memory ratio 16k→64k ≤ 5": cl[0].ratio <= t["n2_mem_ratio_max"],
        "N² time ratio 16k→64k ≤ 8": cl[2].ratio <= t["n2_time_ratio_max"],
        "dense memory ratio per 4× ≥ 12": cl[1].ratio >= t["dense_mem_ratio_min"],
        "N² runs at 131,072 nodes": 131072 in n2,
        "params identical for L = 1, 6, 12": len(set(params["n2_molpcba"].values())) == 1,
    }
    return cl, checks


def format_table(sc: dict, params: dict, checks: dict[str, bool]) -> str:
    from labcore.memory import format_bytes

    lines = [
        "| model | nodes | forward s (median) | peak RSS above baseline |",
        "|---|---|---|---|",
    ]
    for name, label in (("n2", "N² (1 step, np=256)"), ("dense", "dense all-pairs ψ")):
        for n, r in sc[name].items():
            mem = format_bytes(r["peak_bytes"]) if "peak_bytes" in r else "-"
            lines.append(f"| {label} | {n:,} | {r['seconds']:.3f} | {mem} |")
    lines += ["", "| model | L=1 | L=6 | L=12 |", "|---|---|---|---|"]
    for key, label in (
        ("n2_molpcba", "N² molpcba config"),
        ("n2_molpcba_official_count", "N² (official count, +17,280 unused)"),
        ("stacked_equivalent", "same with L unshared cells"),
    ):
        v = params[key]
        lines.append(f"| {label} | {v[1]:,} | {v[6]:,} | {v[12]:,} |")
    lines.append(f"| PyG GIN 5×300 (any L column) | {params['gin_5x300']:,} | | |")
    lines += ["", "Pre-registered checks:"]
    lines += [f"  [{'met' if ok else 'MISSED'}] {k}" for k, ok in checks.items()]
    return "\n".join(lines)
