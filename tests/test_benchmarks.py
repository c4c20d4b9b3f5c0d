import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
bench_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_run)


def test_discover_matches_packages_folder():
    expected = sorted(p.parent.name for p in (ROOT / "packages").glob("*/pyproject.toml"))
    assert bench_run.discover() == expected


def test_no_packages_exits_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_run, "discover", lambda root=None: [])
    assert bench_run.main([]) == 0
    assert "nothing to benchmark" in capsys.readouterr().out


def test_unknown_package_is_an_error(capsys):
    assert bench_run.main(["--only", "no_such_package"]) == 2
    assert "unknown package" in capsys.readouterr().err


def test_summary_table_rows():
    rec = {"package": "snell", "version": "0.1.0", "device": "cpu", "claims": [
        {"claim": "SNELL peak <= 1.15x LoRA", "metric": "peak_bytes", "value": 2.0,
         "baseline": 4.0, "ratio": 0.5, "unit": "B"}]}  # fmt: skip
    table = bench_run.summary_table([rec, {"package": "x", "claims": []}])
    rows = table.strip().splitlines()
    assert (
        rows[2]
        == "| snell | 0.1.0 | SNELL peak <= 1.15x LoRA | peak_bytes | 2 B | 4 B | 0.5 | cpu |"
    )
    assert "(no claims reported)" in rows[3]
    json.dumps(rec)
