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
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
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
    """One headline number a ``bench`` backs: ``value`` of ``metric`` against ``baseline``."""

    claim: str
    metric: str
    value: float
    baseline: float | None = None
    unit: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


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
    """Write ``<out_dir>/<package>_<command>.json`` in the project's one result schema."""
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
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{package}_{command}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(record), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)  # never leave a half-written result
    return path
