"""Repo-level invariants: members are complete, the dependency rule holds, CI stays in step.

The rule checkers are plain functions over a root folder, so each is also run on a small bad
workspace built in ``tmp_path`` to show that it fails when the rule is broken.
"""

from __future__ import annotations

import ast
import re
import shutil
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "snell", "n2gnn", "heurvidqa", "mcg_videoqa", "content_shift", "diffusion_features",
    "aucseg", "dpcml", "dsa_ensemble", "rcpmod",
}  # fmt: skip
HEAVY = {"timm", "torch_geometric", "diffusers", "transformers"}


def _dist(name: str) -> str:
    return name.replace("_", "-")


def _requirement_name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[(@]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def members(root: Path) -> dict[str, Path]:
    """Import name -> folder, for ``shared`` (labcore) and every ``packages/*``."""
    out = {"labcore": root / "shared"}
    out.update({p.parent.name: p.parent for p in (root / "packages").glob("*/pyproject.toml")})
    return out


def imported_modules(folder: Path) -> set[str]:
    """Top-level names of every absolute import in the ``.py`` files under ``folder``."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def member_problems(root: Path) -> list[str]:
    """Each member needs name, version, a console script named like it, README.md."""
    problems = []
    for name, folder in members(root).items():
        meta = tomllib.loads((folder / "pyproject.toml").read_text()).get("project", {})
        if meta.get("name") != _dist(name):
            problems.append(
                f"{name}: project.name is {meta.get('name')!r}, expected {_dist(name)!r}"
            )
        if not meta.get("version"):
            problems.append(f"{name}: no version")
        if name not in meta.get("scripts", {}):
            problems.append(f"{name}: no console script {name!r}")
        if not (folder / "README.md").is_file():
            problems.append(f"{name}: no README.md")
        if name != "labcore" and not (folder / "CHANGELOG.md").is_file():
            problems.append(f"{name}: no CHANGELOG.md")
    return problems


def dependency_problems(root: Path) -> list[str]:
    """The dependency rule, from pyproject dependencies and from import statements."""
    problems = []
    for name, folder in members(root).items():
        meta = tomllib.loads((folder / "pyproject.toml").read_text()).get("project", {})
        deps = {_requirement_name(r) for r in meta.get("dependencies", [])}
        imports = imported_modules(folder)
        others = METHODS - {name}
        for other in sorted(others):
            if _dist(other) in deps:
                problems.append(f"{name}: depends on method package {_dist(other)}")
            if other in imports:
                problems.append(f"{name}: imports method package {other}")
        if name == "labcore":
            for heavy in sorted(HEAVY):
                if heavy in imports or _dist(heavy) in deps or heavy.replace("_", "-") in deps:
                    problems.append(f"labcore: uses heavy library {heavy}")
        elif "labcore" not in deps:
            problems.append(f"{name}: does not depend on labcore")
    return problems


def ci_matrices(root: Path) -> list[set[str]]:
    """Every ``member: [...]`` matrix list in the GitHub workflow."""
    text = (root / ".github" / "workflows" / "ci.yml").read_text()
    found = re.findall(r"^\s*member:\s*\[([^\]]*)\]", text, re.M)
    return [{s.strip() for s in m.split(",") if s.strip()} for m in found] or [set()]


def matrix_problems(root: Path) -> list[str]:
    problems: list[str] = []
    for matrix in ci_matrices(root):
        problems += [f"CI matrix lacks {n}" for n in sorted(set(members(root)) - matrix)]
        problems += [
            f"CI matrix names unknown member {n}" for n in sorted(matrix - set(members(root)))
        ]
    return problems


def test_members_are_complete():
    assert member_problems(ROOT) == []


def test_dependency_rule_holds():
    assert dependency_problems(ROOT) == []


def test_ci_matrix_in_step_with_packages():
    assert matrix_problems(ROOT) == []


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "uv run python benchmarks/run.py" in readme
    test_cmd = re.search(r"^(uv run pytest[^\n]*)$", readme, re.M)
    assert test_cmd, "README names no `uv run pytest` command"
    assert test_cmd.group(1) in ci
    for cmd in ("uv sync --locked", "uv run ruff check .", "uv run ruff format --check ."):
        assert cmd in ci
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert "uv run ruff check" in workflow and "uv run pytest" in workflow


def _bad_workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(ROOT / "shared", root / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / ".github" / "workflows" / "ci.yml").write_text("      member: [labcore]\n")
    for name, extra_dep, code in [
        ("snell", "", "import torch\n"),
        ("dpcml", '"snell", ', "from snell import SnellConfig\n"),
    ]:
        pkg = root / "packages" / name
        (pkg / "src" / name).mkdir(parents=True)
        (pkg / "README.md").write_text("x")
        (pkg / "CHANGELOG.md").write_text("x")
        (pkg / "src" / name / "__init__.py").write_text(code)
        (pkg / "pyproject.toml").write_text(
            f'[project]\nname = "{name}"\nversion = "0.1.0"\n'
            f'dependencies = [{extra_dep}"labcore", "torch"]\n'
            f'[project.scripts]\n{name} = "{name}.cli:main"\n'
        )
    return root


def test_rule_checkers_fail_on_a_bad_workspace(tmp_path):
    root = _bad_workspace(tmp_path)
    assert member_problems(root) == []
    assert dependency_problems(root) == [
        "dpcml: depends on method package snell",
        "dpcml: imports method package snell",
    ]
    assert matrix_problems(root) == ["CI matrix lacks dpcml", "CI matrix lacks snell"]
    (root / "shared" / "src" / "labcore" / "bad.py").write_text("import timm\n")
    assert "labcore: uses heavy library timm" in dependency_problems(root)
    (root / "packages" / "snell" / "README.md").unlink()
    assert member_problems(root) == ["snell: no README.md"]


@pytest.mark.parametrize(
    "req", ["snell>=0.1", "snell", "snell[extra]", "snell ; python_version>'3'"]
)
def test_requirement_names(req):
    assert _requirement_name(req) == "snell"


def test_dev_group_pulls_every_member():
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = {_requirement_name(r) for r in root["dependency-groups"]["dev"]}
    assert {_dist(n) for n in members(ROOT)} <= dev


@pytest.mark.parametrize("name", sorted(members(ROOT)))
def test_console_script_builds_its_parser(name):
    """``<script> --help`` exits 0: catches argparse conflicts such as a flag a package adds
    again on top of labcore's common options."""
    import importlib

    meta = tomllib.loads((members(ROOT)[name] / "pyproject.toml").read_text())["project"]
    module, func = meta["scripts"][name].split(":")
    with pytest.raises(SystemExit) as exit_:
        getattr(importlib.import_module(module), func)(["--help"])
    assert exit_.value.code == 0


@pytest.mark.parametrize("name", sorted(members(ROOT)))
def test_version_attribute_matches_pyproject(name):
    import importlib

    meta = tomllib.loads((members(ROOT)[name] / "pyproject.toml").read_text())["project"]
    assert importlib.import_module(name).__version__ == meta["version"]


class _Parser(Exception):
    def __init__(self, parser):
        self.parser = parser


def root_parser(name: str, monkeypatch):
    """The console script's top-level parser, caught at its first ``parse_args`` call."""
    import argparse
    import importlib

    meta = tomllib.loads((members(ROOT)[name] / "pyproject.toml").read_text())["project"]
    module, func = meta["scripts"][name].split(":")

    def catch(self, *args, **kwargs):
        raise _Parser(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(_Parser) as caught:
        getattr(importlib.import_module(module), func)([])
    return caught.value.parser


def subcommands(parser) -> dict:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.mark.parametrize("name", sorted(set(members(ROOT)) - {"labcore"}))
def test_bench_quick_is_wired(name, monkeypatch):
    """Every package has ``demo train evaluate bench`` and ``bench`` takes ``--quick`` (the
    benchmark matrix relies on it); no bench is run here."""
    subs = subcommands(root_parser(name, monkeypatch))
    assert {"demo", "train", "evaluate", "bench"} <= set(subs), sorted(subs)
    flags = {s for a in subs["bench"]._actions for s in a.option_strings}
    assert {"--quick", "--out", "--device", "--seed"} <= flags


@pytest.mark.parametrize("name", sorted(members(ROOT)))
def test_every_flag_says_what_it_is(name, monkeypatch):
    """Each option of each subcommand has help text (``--help`` then shows its default)."""
    import argparse

    parser = root_parser(name, monkeypatch)
    missing = []
    for sub_name, sub in {"": parser, **subcommands(parser)}.items():
        for a in sub._actions:
            if a.option_strings and not isinstance(a, argparse._HelpAction) and not a.help:
                missing.append(f"{sub_name} {'/'.join(a.option_strings)}".strip())
    assert not missing, f"{name}: flags without help: {', '.join(missing)}"


def readme_snippets() -> list[tuple[str, int, str]]:
    """(README path, block number, code) for every ```python block of every README."""
    paths = [ROOT / "README.md", *sorted(ROOT.glob("shared/README.md")),
             *sorted(ROOT.glob("packages/*/README.md"))]  # fmt: skip
    out = []
    for path in paths:
        blocks = re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)
        out += [(str(path.relative_to(ROOT)), i, code) for i, code in enumerate(blocks)]
    return out


@pytest.mark.parametrize(
    ("readme", "block", "code"), readme_snippets(), ids=lambda v: str(v)[:40].replace("\n", " ")
)
def test_readme_python_snippets_run_as_written(readme, block, code, tmp_path):
    """A user copies the snippet into a fresh folder and runs it on the offline defaults."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=180, env=env)  # fmt: skip
    assert proc.returncode == 0, f"{readme} python block {block}:\n{proc.stderr[-1500:]}"
