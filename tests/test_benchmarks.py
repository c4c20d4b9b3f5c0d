import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
bench_run = importlib.util.module_from_spec(spec)
sys.modules["bench_run"] = bench_run  # dataclasses look their module up there
spec.loader.exec_module(bench_run)


def test_discover_matches_packages_folder():
    expected = sorted(p.parent.name for p in (ROOT / "packages").glob("*/pyproject.toml"))
    assert bench_run.discover() == expected


def test_no_packages_exits_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_run, "discover", lambda root=None: [])
    assert bench_run.main([]) == 0
    assert "nothing to benchmark" in capsys.readouterr().out


def test_unknown_package_is_an_error(capsys):
    with pytest.raises(SystemExit) as e:
        bench_run.main(["--only", "no_such_package"])
    assert e.value.code == 2
    assert "unknown package" in capsys.readouterr().err


def _outcome(**kw):
    return bench_run.Outcome(**{"name": "snell", "seconds": 12.0, **kw})


def test_human_units():
    assert bench_run.human(49_300_000, "B") == "49.3 MB"
    assert bench_run.human(2048, "bytes") == "2.05 KB"
    assert bench_run.human(0.0123, "s") == "12.3 ms"
    assert bench_run.human(3.5, "s") == "3.5 s"
    assert bench_run.human(0.71, "x") == "0.71×"
    assert bench_run.human(None, "s") == "-"


def test_summary_rows_direction_threshold_version():
    rec = {"package": "snell", "version": "0.0.1", "device": "cpu", "claims": [
        {"claim": "peak <= LoRA", "metric": "peak", "value": 2e6, "baseline": 4e6, "ratio": 0.5,
         "unit": "B", "threshold": 3e6, "higher_is_better": False, "met": True},
        {"claim": "acc", "metric": "top1", "value": 0.4, "unit": "", "threshold": 0.5,
         "higher_is_better": True, "met": False}]}  # fmt: skip
    md = bench_run.summary_markdown(
        [_outcome(record=rec, plots=["snell_peak.png"]), _outcome(name="dpcml", error="exit 1")],
        quick=True,
        total_s=30.0,
    )
    version = bench_run.package_version("snell")
    assert "mode: quick" in md and "UTC" in md
    assert (f"| snell | {version} (record: 0.0.1) | peak <= LoRA | peak | 2 MB | 4 MB | 0.5× | ↓ | "
            "met (≤ 3 MB) | cpu | 12 s |") in md  # fmt: skip
    assert "**missed** (≥ 0.5)" in md and "| ↑ |" in md
    assert "**bench failed**: exit 1" in md and "[snell_peak.png](snell_peak.png)" in md


def test_a_failing_bench_is_reported_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_run, "discover", lambda root=None: ["aucseg", "dpcml"])
    ran = []

    def fake(name, quick, timeout, out):
        ran.append((name, quick))
        if name == "aucseg":
            return _outcome(name=name, error="exit 1: boom")
        return _outcome(name=name, record={"package": name, "claims": []})

    monkeypatch.setattr(bench_run, "run_one", fake)
    assert bench_run.main(["--out", str(tmp_path)]) == 1
    assert ran == [("aucseg", True), ("dpcml", True)]
    out = capsys.readouterr()
    assert "[1/2] aucseg" in out.out and "FAILED: exit 1: boom" in out.out
    assert "[2/2] dpcml" in out.out and "failed: aucseg" in out.err
    assert "**bench failed**" in (tmp_path / "SUMMARY.md").read_text()


def test_default_run_does_not_touch_the_committed_results():
    assert bench_run.DEFAULT_OUT.relative_to(ROOT).parts[0] == "runs"
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/runs/" in ignored
