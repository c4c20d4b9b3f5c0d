"""Run records: seeding, device choice, timing, and one JSON schema for every result."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labcore.cli import UserError

__all__ = [
    "RESULT_SCHEMA_VERSION",
    "Claim",
    "Timer",
    "library_versions",
    "resolve_device",
    "seed_everything",
    "write_result",
]

RESULT_SCHEMA_VERSION = 1
_LIBRARIES = (
    "numpy", "torch", "timm", "torch-geometric", "diffusers", "transformers", "scikit-learn",
    "scipy", "safetensors",
)  # fmt: skip


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 -- seeds the legacy global RNG users call
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a :class:`UserError`."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use auto, cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available")
    return device


class Timer:
    """Wall-clock timer (``time.perf_counter``); use as a context manager, read ``elapsed``.

    On CUDA pass ``device`` so pending kernels are synchronised at both ends.
    """

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else None
        self.elapsed = 0.0

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Timer:
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.elapsed = time.perf_counter() - self._start


@dataclass(frozen=True)
class Claim:
    """One headline number a ``bench`` backs: ``value`` of ``metric`` against ``baseline``.

    ``threshold`` is the pre-registered target, fixed before the run, compared with ``value``
    (the ratio to the baseline when ``unit`` is ``"x"``) in the direction ``higher_is_better``.
    ``met`` is ``None`` when no threshold was set.
    """

    claim: str
    metric: str
    value: float
    baseline: float | None = None
    unit: str = ""
    threshold: float | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if self.threshold is None:
            return None
        if self.value is None or not np.isfinite(self.value):
            return False
        if self.higher_is_better:
            return bool(self.value >= self.threshold)
        return bool(self.value <= self.threshold)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


def library_versions() -> dict[str, str]:
    """Versions of Python and of the installed libraries this project uses."""
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _package_version(package: str) -> str:
    try:
        return metadata.version(package.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return "unknown"


def _jsonable(x: Any) -> Any:
    if is_dataclass(x) and not isinstance(x, type):
        return x.as_dict() if hasattr(x, "as_dict") else asdict(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path | torch.device):
        return str(x)
    if isinstance(x, np.generic | torch.Tensor):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def write_result(
    out_dir: str | Path,
    *,
    package: str,
    command: str,
    dataset: str,
    metrics: dict[str, Any],
    memory: dict[str, Any] | None = None,
    timings: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    claims: list[Claim] | None = None,
) -> Path:
    """Write ``<out_dir>/<package>_<command>.json`` in the project's one result schema.

    Under ``torchrun`` only rank 0 writes (the others return the path they would have written);
    the record carries the world size.
    """
    from labcore import dist

    out = Path(out_dir)
    path = out / f"{package}_{command}.json"
    if not dist.is_main():
        return path
    record = {
        "schema": RESULT_SCHEMA_VERSION,
        "package": package,
        "version": _package_version(package),
        "command": command,
        "dataset": dataset,
        "metrics": metrics,
        "memory": memory or {},
        "timings": timings or {},
        "config": config or {},
        "claims": claims or [],
        "device": str(device) if device is not None else "cpu",
        "seed": seed,
        "world_size": dist.world_size(),
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(record), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)  # never leave a half-written result
    return path
