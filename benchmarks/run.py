"""The benchmark matrix: run every package's ``bench --quick`` and tabulate its claims.

    uv run python benchmarks/run.py                 # all packages, quick, into runs/benchmarks/
    uv run python benchmarks/run.py --only snell    # one package (repeatable)
    uv run python benchmarks/run.py --full          # drop --quick
    uv run python benchmarks/run.py --reference     # refresh the committed benchmarks/results/

Each package writes ``<out>/<name>_bench.json`` (labcore's result schema, with ``claims``) and its
PNG plots; this script gathers them into one folder with a ``SUMMARY.md``. A plain run writes to
the untracked ``runs/benchmarks/`` so it never dirties the checkout; the committed reference
results in ``benchmarks/results/`` change only with ``--reference``. A package whose bench fails
or times out is reported in the summary and makes the exit code non-zero; the others still run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "benchmarks" / "results"
DEFAULT_OUT = ROOT / "runs" / "benchmarks"


def discover(root: Path = ROOT) -> list[str]:
    """Names of the method packages (folders of ``packages/`` with a pyproject)."""
    return sorted(p.parent.name for p in (root / "packages").glob("*/pyproject.toml"))


def package_version(name: str, root: Path = ROOT) -> str:
    """The version in the package's pyproject (the source of truth, not a stale record)."""
    meta = tomllib.loads((root / "packages" / name / "pyproject.toml").read_text())
    return meta["project"]["version"]


def human(value: float | None, unit: str) -> str:
    """A number in the unit people read: bytes as KB/MB/GB, seconds as ms/s, ratios as ×."""
    if value is None:
        return "-"
    if not isinstance(value, int | float):
        return str(value)
    u = unit.strip()
    if u in ("B", "bytes"):
        for scale, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {name}"
        return f"{value:.0f} B"
    if u == "MB" and abs(value) >= 1000:
        return f"{value / 1000:.3g} GB"
    if u == "s" and abs(value) < 1:
        return f"{value * 1e3:.3g} ms"
    if u in ("x", "×"):
        return f"{value:.3g}×"
    return f"{value:.4g}" + (f" {u}" if u else "")


def _verdict(claim: dict) -> str:
    met = claim.get("met")
    if met is None:
        return "no threshold"
    arrow = "≥" if claim.get("higher_is_better", True) else "≤"
    target = f"{arrow} {human(claim.get('threshold'), claim.get('unit', ''))}"
    return f"met ({target})" if met else f"**missed** ({target})"


@dataclass
class Outcome:
    """One package's bench run: its record (None on failure), how long it took, why it failed."""

    name: str
    seconds: float
    record: dict | None = None
    error: str = ""
    plots: list[str] = field(default_factory=list)

    @property
    def claims(self) -> list[dict]:
        return (self.record or {}).get("claims") or []

    def status(self) -> str:
        if self.record is None:
            return f"FAILED: {self.error}"
        met = sum(c.get("met") is True for c in self.claims)
        judged = sum(c.get("met") is not None for c in self.claims)
        return f"ok, claims met {met}/{judged}"


def summary_markdown(outcomes: list[Outcome], quick: bool, total_s: float) -> str:
    """SUMMARY.md: when and how it ran, one row per claim, failures, links to the plots."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick (`bench --quick`)" if quick else "full (`bench`)"
    lines = [
        "# Benchmark matrix",
        "",
        f"Written by `benchmarks/run.py` on {when}; mode: {mode}; total {total_s:.0f} s.",
        "Each claim's threshold was fixed before the run; ratios are value / baseline measured",
        "in the same run. Direction: ↑ higher is better, ↓ lower is better.",
        "",
        "| package | version | claim | metric | value | baseline | ratio | better | threshold"
        " | device | bench time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        version = package_version(o.name)
        if o.record is None:
            lines.append(
                f"| {o.name} | {version} | **bench failed**: {o.error} | | | | | | | | "
                f"{o.seconds:.0f} s |"
            )
            continue
        if o.record.get("version") not in (None, version):
            version += f" (record: {o.record['version']})"
        for c in o.claims or [{"claim": "(no claims reported)", "metric": "-"}]:
            unit = c.get("unit", "")
            ratio = "-" if c.get("ratio") is None else f"{c['ratio']:.3g}×"
            better = "↑" if c.get("higher_is_better", True) else "↓"
            lines.append(
                f"| {o.name} | {version} | {c['claim']} | {c['metric']} | "
                f"{human(c.get('value'), unit)} | {human(c.get('baseline'), unit)} | {ratio} | "
                f"{better} | {_verdict(c) if 'value' in c else '-'} | "
                f"{o.record.get('device', '?')} | {o.seconds:.0f} s |"
            )
    plots = [(o.name, p) for o in outcomes for p in o.plots]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"- {name}: [{p}]({p})" for name, p in plots]
    return "\n".join(lines) + "\n"


def run_one(name: str, quick: bool, timeout: float, out: Path) -> Outcome:
    """Run ``<name> bench`` in a subprocess; copy its JSON and PNGs into ``out``."""
    exe = Path(sys.executable).parent / name
    cmd = [str(exe) if exe.exists() else name, "bench"] + (["--quick"] if quick else [])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run(
                [*cmd, "--out", tmp], timeout=timeout, capture_output=True, text=True
            )
        except subprocess.TimeoutExpired:
            return Outcome(
                name, time.perf_counter() - start, error=f"timed out after {timeout:.0f} s"
            )
        except FileNotFoundError:
            return Outcome(name, 0.0, error="console script not installed (run `uv sync`)")
        took = time.perf_counter() - start
        path = Path(tmp) / f"{name}_bench.json"
        if proc.returncode != 0 or not path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
            return Outcome(name, took, error=f"exit {proc.returncode}: {' | '.join(tail)}")
        record = json.loads(path.read_text())
        (out / path.name).write_text(json.dumps(record, indent=2) + "\n")
        plots = []
        for png in sorted(Path(tmp).rglob("*.png")):
            target = out / (png.name if png.name.startswith(name) else f"{name}_{png.name}")
            shutil.copyfile(png, target)
            plots.append(target.name)
    return Outcome(name, took, record, plots=plots)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--only", action="append", help="run just this package (repeatable)")
    parser.add_argument("--full", action="store_true", help="run the full bench, not --quick")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per package (default: 300 quick, 3600 full)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: runs/benchmarks, untracked)")  # fmt: skip
    parser.add_argument("--reference", action="store_true",
                        help="refresh the committed results in benchmarks/results/")  # fmt: skip
    args = parser.parse_args(argv)
    if args.reference and args.out is not None:
        parser.error("--reference and --out are exclusive")
    out = REFERENCE if args.reference else (args.out or DEFAULT_OUT)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} exists and is not a directory")
    timeout = args.timeout or (3600.0 if args.full else 300.0)

    names = discover()
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"unknown package(s): {', '.join(unknown)}")
        names = [n for n in names if n in args.only]
    if not names:
        print("No packages in packages/ yet: nothing to benchmark.")
        return 0

    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("*_bench.json"), *out.glob("*.png")]:
        stale.unlink()  # the folder shows this run only
    mode = "bench" if args.full else "bench --quick"
    print(f"running `{mode}` for {len(names)} packages into {out}", flush=True)
    start = time.perf_counter()
    outcomes = []
    for i, name in enumerate(names, 1):
        o = run_one(name, quick=not args.full, timeout=timeout, out=out)
        outcomes.append(o)
        elapsed = time.perf_counter() - start
        print(f"[{i}/{len(names)}] {name:<20} {o.seconds:6.0f} s  {o.status()}"
              f"  (total {elapsed:.0f} s)", flush=True)  # fmt: skip
    total = time.perf_counter() - start
    (out / "SUMMARY.md").write_text(summary_markdown(outcomes, not args.full, total))
    failed = [o.name for o in outcomes if o.record is None]
    print(f"done in {total:.0f} s; wrote {out / 'SUMMARY.md'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
