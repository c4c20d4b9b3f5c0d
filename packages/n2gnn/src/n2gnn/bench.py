"""Scaling and parameter benchmarks (spec §4 B and E): N² vs a dense all-pairs ψ, and N² vs GIN."""

from __future__ import annotations

import functools
import statistics

import torch
from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

from labcore.memory import peak_memory
from labcore.runs import Claim, Timer
from n2gnn.baselines import dense_global_step, gin_molpcba_baseline
from n2gnn.model import N2Graph, N2Node, official_parameter_count

# Spec §4 B: eval forward, one step, avg degree 10, 32 input features. Full: the spec's widths
# (d=128, q=64, k=8, np=256); quick: the same claims at smaller widths and sizes.
WIDTHS = {
    "full": dict(hidden=128, state=64, pieces=8, num_pseudo=256, num_steps=1, dropout=0.0),
    "quick": dict(hidden=64, state=32, pieces=8, num_pseudo=64, num_steps=1, dropout=0.0),
}
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
# node counts; each size is timed and its peak memory measured. The claims' spans (16k→64k for
# N², DENSE_SPAN for the dense ψ) are in both modes.
SIZES = {
    "quick": {"n2": [1024, 4096, 16384, 65536, 131072], "dense": [1024, 2048, 4096]},
    "full": {"n2": [4096, 16384, 65536, 131072], "dense": [2048, 4096, 8192, 16384]},
}
DENSE_SPAN = {"quick": (1024, 4096), "full": (2048, 8192)}
REPEATS = {"quick": 3, "full": 5}
# Pre-registered (spec §4 B), fixed before any run: per 4× nodes from 16k up, N² peak memory
# ≤ 5× and time ≤ 8×; the dense ψ's memory ≥ 12×; N² at 131,072 nodes within 24 GB; N²'s whole
# forward faster than the dense kernel alone at 4,096 nodes; parameters do not grow with L.
THRESHOLDS = {
    "n2_mem_ratio_max": 5.0,
    "n2_time_ratio_max": 8.0,
    "dense_mem_ratio_min": 12.0,
    "n2_large_bytes_max": 24e9,
    "n2_vs_dense_time_max": 1.0,
    "params_ratio_max": 1.0,
}


def random_graph(n: int, avg_degree: float = AVG_DEGREE, features: int = FEATURES, seed: int = 0):
    """Uniform random undirected graph with ``n·avg_degree/2`` edges and Gaussian features."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, int(n * avg_degree / 2)), generator=g)
    ei = coalesce(to_undirected(remove_self_loops(ei)[0], num_nodes=n), num_nodes=n)
    return torch.randn(n, features, generator=g), ei


def n2_model(mode: str = "quick", device="cpu") -> N2Node:
    torch.manual_seed(0)
    return N2Node(in_channels=FEATURES, out_channels=4, **WIDTHS[mode]).eval().to(device)


def _n2_setup(n: int, mode: str, device: str):
    x, ei = random_graph(n)
    return n2_model(mode, device), x.to(device), ei.to(device)


def _n2_forward(state) -> None:
    model, x, ei = state
    with torch.no_grad():
        model(x, ei)


def _dense_setup(n: int, mode: str, device: str):
    w = WIDTHS[mode]
    g = torch.Generator().manual_seed(0)
    Q = torch.randn(n, w["state"], generator=g)
    M = torch.randn(n, w["hidden"], generator=g)
    return Q.to(device), M.to(device), torch.randn(w["pieces"], generator=g).to(device)


def _dense_forward(state) -> None:
    with torch.no_grad():
        dense_global_step(*state)


def _median_time(fn, repeats: int, device, warm_up: bool = True) -> float:
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        with Timer(device) as t:
            fn()
        times.append(t.elapsed)
    return statistics.median(times)


def _peak(fn, setup, n: int, mode: str, device: torch.device, method: str) -> int:
    return peak_memory(
        fn, n, mode, str(device), setup=setup, device=device, method=method
    ).peak_bytes


def scaling(
    quick: bool = True,
    repeats: int | None = None,
    memory: bool = True,
    device: str | torch.device = "cpu",
    rss: bool = False,
    show_progress: bool = False,
) -> dict:
    """Forward seconds (median after a warm-up) and peak memory, by node count.

    Peak memory is the peak of live tensor bytes on CPU (``labcore.memory``'s ``"tensors"``
    method, the CPU analogue of a GPU peak) and the allocator's peak on CUDA. ``rss=True`` (CPU)
    also records each size's peak resident set size in a fresh subprocess (slow: one interpreter
    per size).
    """
    from labcore.cli import progress

    mode = "quick" if quick else "full"
    device = torch.device(device)
    repeats = repeats or REPEATS[mode]
    method = "allocator" if device.type == "cuda" else "tensors"
    out: dict = {
        "mode": mode,
        "widths": WIDTHS[mode],
        "memory_method": method,
        "n2": {},
        "dense": {},
    }
    jobs = [("n2", n) for n in SIZES[mode]["n2"]] + [("dense", n) for n in SIZES[mode]["dense"]]
    bar = progress(jobs, desc="bench", leave=False, disable=not show_progress or None)
    for kind, n in bar:
        bar.set_postfix(model=kind, nodes=n)
        setup, fn = (_n2_setup, _n2_forward) if kind == "n2" else (_dense_setup, _dense_forward)
        state = setup(n, mode, str(device))
        first = not out[kind]  # one warm-up per model at its smallest size (quick)
        call = functools.partial(fn, state)
        row = {"seconds": _median_time(call, repeats, device, warm_up=first or not quick)}
        del state, call
        if memory:
            row["peak_bytes"] = _peak(fn, setup, n, mode, device, method)
            if rss and device.type == "cpu":
                row["peak_rss_bytes"] = _peak(fn, setup, n, mode, device, "allocator")
        out[kind][n] = row
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
    """Headline claims with their pre-registered thresholds and direction; and the checks."""
    n2, dense, t = sc["n2"], sc["dense"], THRESHOLDS
    d_small, d_large = DENSE_SPAN[sc["mode"]]
    big = max(n2)
    mem = "GPU allocator peak" if sc["memory_method"] == "allocator" else "peak live tensor bytes"
    cl = [
        Claim(
            f"N² {mem} per 4× nodes (16,384→65,536)",
            "peak_bytes(65,536) / peak_bytes(16,384)",
            ratio(n2, 16384, 65536, "peak_bytes"),
            unit="x",
            threshold=t["n2_mem_ratio_max"],
            higher_is_better=False,
        ),
        Claim(
            f"dense all-pairs ψ {mem} per 4× nodes ({d_small:,}→{d_large:,})",
            f"peak_bytes({d_large:,}) / peak_bytes({d_small:,})",
            ratio(dense, d_small, d_large, "peak_bytes"),
            unit="x",
            threshold=t["dense_mem_ratio_min"],
            higher_is_better=True,
        ),
        Claim(
            "N² forward time per 4× nodes (16,384→65,536)",
            "seconds(65,536) / seconds(16,384)",
            ratio(n2, 16384, 65536, "seconds"),
            unit="x",
            threshold=t["n2_time_ratio_max"],
            higher_is_better=False,
        ),
        Claim(
            f"N² eval forward at {big:,} nodes ({mem})",
            "peak_bytes",
            n2[big]["peak_bytes"],
            unit="B",
            threshold=t["n2_large_bytes_max"],
            higher_is_better=False,
        ),
        Claim(f"N² eval forward at {big:,} nodes (time)", "seconds", n2[big]["seconds"], unit="s"),
        Claim(
            "N² whole forward / dense ψ kernel alone, at 4,096 nodes",
            "seconds / seconds",
            ratio({0: dense[4096], 1: n2[4096]}, 0, 1, "seconds"),
            unit="x",
            threshold=t["n2_vs_dense_time_max"],
            higher_is_better=False,
        ),
        Claim(
            "N² molpcba-config parameters, L=12 / L=1 (one shared cell)",
            "params / params",
            params["n2_molpcba"][12] / params["n2_molpcba"][1],
            unit="x",
            threshold=t["params_ratio_max"],
            higher_is_better=False,
        ),
        Claim(
            "N² molpcba-config parameters (official count) vs PyG GIN 5×300",
            "params",
            params["n2_molpcba_official_count"][6],
            params["gin_5x300"],
        ),
    ]
    checks = {c.claim: c.met for c in cl if c.met is not None}
    return cl, checks


def plot_scaling(sc: dict, out_dir) -> list:
    """Two log-log PNGs beside the JSON: peak memory and time vs nodes, N² against dense ψ."""
    from pathlib import Path

    from labcore.plot import line_plot

    out_dir = Path(out_dir)
    label = {"n2": "N² (one step)", "dense": "dense all-pairs ψ"}
    w = sc["widths"]
    title = f"{sc['mode']}: d={w['hidden']}, q={w['state']}, np={w['num_pseudo']}"
    paths = []
    for key, ylabel, name in (
        ("peak_bytes", f"peak memory, MB ({sc['memory_method']})", "memory"),
        ("seconds", "forward time, s (median)", "time"),
    ):
        series = {}
        for kind in ("n2", "dense"):
            rows = {n: r for n, r in sc[kind].items() if key in r}
            if rows:
                scale = 1e6 if key == "peak_bytes" else 1.0
                series[label[kind]] = (list(rows), [r[key] / scale for r in rows.values()])
        if series:
            path = line_plot(out_dir / f"n2gnn_bench_{name}.png", series, xlabel="nodes",
                             ylabel=ylabel, title=title, loglog=True)  # fmt: skip
            if path is not None:
                paths.append(path)
    return paths


def format_table(sc: dict, params: dict, checks: dict[str, bool]) -> str:
    from labcore.memory import format_bytes

    np_ = sc["widths"]["num_pseudo"]
    rss = any("peak_rss_bytes" in r for r in sc["n2"].values())
    lines = [
        f"| model | nodes | forward s (median) | peak ({sc['memory_method']}) |"
        + (" peak RSS |" if rss else ""),
        "|---|---|---|---|" + ("---|" if rss else ""),
    ]
    for name, label in (("n2", f"N² (1 step, np={np_})"), ("dense", "dense all-pairs ψ")):
        for n, r in sc[name].items():
            mem = format_bytes(r["peak_bytes"]) if "peak_bytes" in r else "-"
            extra = f" {format_bytes(r['peak_rss_bytes'])} |" if "peak_rss_bytes" in r else ""
            lines.append(f"| {label} | {n:,} | {r['seconds']:.3f} | {mem} |" + extra)
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
