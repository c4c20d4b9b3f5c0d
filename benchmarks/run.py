"""The benchmark matrix: run every package's ``bench --quick`` and tabulate its claims.

    uv run python benchmarks/run.py            # all packages
    uv run python benchmarks/run.py --only snell
    uv run python benchmarks/run.py --full     # drop --quick

Each package writes ``<out>/<name>_bench.json`` (labcore's result schema, with ``claims``); this
script copies them into ``benchmarks/results/`` and writes ``benchmarks/results/SUMMARY.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def discover(root: Path = ROOT) -> list[str]:
    """Names of the method packages (folders of ``packages/`` with a pyproject)."""
    return sorted(p.parent.name for p in (root / "packages").glob("*/pyproject.toml"))


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def summary_table(records: list[dict]) -> str:
    """One markdown table: package, version, claim, metric, value, baseline, ratio, device."""
    lines = [
        "| package | version | claim | metric | value | baseline | ratio | device |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rec in records:
        claims = rec.get("claims") or [{"claim": "(no claims reported)", "metric": "-"}]
        for c in claims:
            unit = f" {c['unit']}" if c.get("unit") else ""
            value = f"{_fmt(c.get('value'))}{unit}"
            baseline = "-" if c.get("baseline") is None else f"{_fmt(c['baseline'])}{unit}"
            lines.append(
                f"| {rec['package']} | {rec.get('version', '?')} | {c['claim']} | {c['metric']} | "
                f"{value} | {baseline} | {_fmt(c.get('ratio'))} | {rec.get('device', '?')} |"
            )
    return "\n".join(lines) + "\n"


def run_one(name: str, quick: bool, timeout: float) -> tuple[dict | None, str]:
    """Run ``<name> bench`` in a subprocess; return its record (or None) and a status line."""
    exe = Path(sys.executable).parent / name
    cmd = [str(exe) if exe.exists() else name, "bench"] + (["--quick"] if quick else [])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [*cmd, "--out", tmp], timeout=timeout, capture_output=True, text=True
            )
        except subprocess.TimeoutExpired:
            return None, f"{name}: timed out after {timeout:.0f} s"
        except FileNotFoundError:
            return None, f"{name}: console script not installed (run `uv sync`)"
        took = time.perf_counter() - start
        path = Path(tmp) / f"{name}_bench.json"
        if proc.returncode != 0 or not path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return None, f"{name}: failed (exit {proc.returncode}): {' | '.join(tail)}"
        record = json.loads(path.read_text())
    return record, f"{name}: ok in {took:.0f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", help="run just this package (repeatable)")
    parser.add_argument("--full", action="store_true", help="run the full bench, not --quick")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per package")
    args = parser.parse_args(argv)

    names = discover()
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            print(f"run.py: error: unknown package(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
        names = [n for n in names if n in args.only]
    if not names:
        print("No packages in packages/ yet: nothing to benchmark.")
        return 0

    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        print(f"== {name} bench{'' if args.full else ' --quick'}", flush=True)
        record, status = run_one(name, quick=not args.full, timeout=args.timeout)
        print(status, flush=True)
        if record is None:
            failed.append(name)
            continue
        (RESULTS / f"{name}_bench.json").write_text(json.dumps(record, indent=2) + "\n")

    records = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*_bench.json"))]
    records = [r for r in records if r.get("package") in discover()]
    summary = "# Benchmark matrix\n\nWritten by `benchmarks/run.py` from `*_bench.json`.\n\n"
    (RESULTS / "SUMMARY.md").write_text(summary + summary_table(records))
    print(f"wrote {RESULTS / 'SUMMARY.md'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
