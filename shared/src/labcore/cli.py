"""Shared plumbing for the packages' command lines.

Each package's ``cli.py`` builds an ``argparse`` parser with ``common_parser()`` as a parent on
every subcommand, parses with :func:`parse_args` (which applies ``--config`` and ``--threads``),
and wraps its ``main`` in :func:`error_boundary` so expected errors become one line and exit
code 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import tomllib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "UserError",
    "check_out_dir",
    "common_parser",
    "error_boundary",
    "load_config",
    "main",
    "nonnegative_int",
    "parse_args",
    "positive_float",
    "positive_int",
    "progress",
    "unit_interval",
]


class UserError(ValueError):
    """Bad input from the user (a path, a file format, an argument): reported in one line."""


_EXPECTED = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (counts, sizes, epochs, steps)."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0 (learning rates, temperatures, scales)."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def unit_interval(text: str) -> float:
    """argparse type: a float in [0, 1] (probabilities, ratios, fractions)."""
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def common_parser(
    package: str | None = None, threads: int | None = None
) -> argparse.ArgumentParser:
    """The flags every subcommand shares, as a parent parser (``parents=[common_parser()]``).

    ``threads`` is the package's default for ``--threads`` (torch CPU threads); ``None`` keeps
    torch's own default (one per physical core).
    """
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", type=Path, default=Path("runs") / (package or "results"),
                   help="directory for result JSON and artefacts")  # fmt: skip
    g.add_argument("--config", type=Path, default=None,
                   help="JSON or TOML file whose keys set argument defaults")  # fmt: skip
    g.add_argument("--threads", type=positive_int, default=threads,
                   help="torch CPU threads (None: one per physical core)")  # fmt: skip
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="autocast precision for training and evaluation "
                        "(fp16 needs CUDA; see labcore.dist.autocast)")  # fmt: skip
    return p


def check_out_dir(out: str | Path) -> Path:
    """Fail before any work if ``out`` cannot become a results directory.

    ``out`` must be a directory or not exist yet, and the nearest existing folder on its path
    must be writable. Nothing is created here, so a rejected run leaves nothing behind.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"--out {out}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {probe} is not writable")
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a flat JSON or TOML mapping of argument names to values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        if path.suffix == ".toml":
            cfg = tomllib.loads(path.read_text())
        else:
            cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"cannot parse config {path}: {e}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"config {path} must hold a mapping of argument names to values")
    return {k.replace("-", "_"): v for k, v in cfg.items()}


def _parsers(parser: argparse.ArgumentParser) -> Iterable[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None):
    """Parse ``argv``; if ``--config FILE`` is given, its keys become defaults and it is re-parsed.

    Flags given on the command line win over the file; an unknown key is an error. A ``threads``
    value (from :func:`common_parser`) is applied with ``torch.set_num_threads``; an ``out``
    directory is checked with :func:`check_out_dir` before the command does any work. Every
    (sub)parser shows argument defaults in ``--help``.
    """
    for p in _parsers(parser):
        if p.formatter_class is argparse.HelpFormatter:
            p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    args = _parse_with_config(parser, argv)
    if getattr(args, "out", None) is not None:
        check_out_dir(args.out)
    threads = getattr(args, "threads", None)
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:  # a config value skips argparse's check
            raise UserError(f"threads must be an integer >= 1, got {threads!r}")
        import torch

        torch.set_num_threads(threads)
    return args


def _parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None):
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is None:
        return args
    cfg = load_config(args.config)
    unknown = set(cfg) - set(vars(args))
    if unknown:
        raise UserError(f"unknown keys in config {args.config}: {', '.join(sorted(unknown))}")
    for p in _parsers(parser):
        actions = {a.dest: a for a in p._actions}
        p.set_defaults(**{k: _as_default(actions[k], v) for k, v in cfg.items() if k in actions})
    return parser.parse_args(argv)


def _as_default(action: argparse.Action, value: Any) -> Any:
    """A config value for a typed flag goes in as text, so argparse checks it like a flag."""
    scalar = isinstance(value, int | float | str) and not isinstance(value, bool)
    if action.type is not None and scalar and action.nargs is None:
        return str(value)
    return value


def progress(iterable: Iterable | None = None, **kwargs: Any):
    """A tqdm progress bar on stderr, silent when stderr is not a terminal or on ranks > 0."""
    from tqdm.auto import tqdm

    from labcore.dist import is_main

    kwargs.setdefault("disable", None if is_main() else True)  # None: off when not a tty
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def error_boundary(prog: str) -> Callable[[Callable[..., int | None]], Callable[..., int]]:
    """Wrap a CLI ``main`` so expected errors print ``prog: error: msg`` and return 2."""

    def wrap(main: Callable[..., int | None]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args: Any, **kwargs: Any) -> int:
            try:
                return main(*args, **kwargs) or 0
            except _EXPECTED as e:
                msg = str(e) if not isinstance(e, OSError) or not e.filename else (
                    f"{e.strerror or 'cannot open'}: {e.filename}"
                )  # fmt: skip
                print(f"{prog}: error: {msg}", file=sys.stderr)
                return 2
            except BrokenPipeError:  # output piped into `head` and closed: not an error
                import os

                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 0
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130

        return run

    return wrap


@error_boundary("labcore")
def main(argv: Sequence[str] | None = None) -> int:
    """``labcore info``: versions and the data root; ``labcore data-root``: print the data root."""
    from labcore import __version__
    from labcore.data import data_root
    from labcore.runs import library_versions

    parser = argparse.ArgumentParser(prog="labcore", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="library versions, devices and the data root")
    sub.add_parser("data-root", help="print the directory datasets are read from")
    args = parser.parse_args(argv)
    if args.command == "data-root":
        print(data_root())
        return 0
    import torch

    info = {"labcore": __version__, **library_versions(), "cuda": torch.cuda.is_available(),
            "data_root": str(data_root())}  # fmt: skip
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
