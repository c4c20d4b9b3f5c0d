"""Exact memory accounting for training runs.

Three views of memory, from cheapest to most complete:

* :func:`training_state_bytes` -- the *static* training state: parameters (trainable and frozen),
  gradients that exist, optimizer state. Counted from tensor storages, each storage once.
* :func:`saved_activation_bytes` -- the tensors autograd keeps for backward while ``fn`` runs,
  seen through :func:`torch.autograd.graph.saved_tensors_hooks`, each storage once, parameters
  excluded. Checkpointed regions save only their boundary, so the hook sees what recompute saves.
* :func:`peak_memory` -- the allocator's view: CUDA ``max_memory_allocated`` on a GPU; on CPU the
  peak resident set size of ``fn`` run in a fresh subprocess, above the RSS after imports.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "PeakMemory",
    "StateBytes",
    "format_bytes",
    "peak_memory",
    "saved_activation_bytes",
    "training_state_bytes",
]


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


def _unique_storage_bytes(tensors: Iterable[torch.Tensor], seen: set) -> int:
    total = 0
    for t in tensors:
        key = _storage_key(t)
        if key in seen or t.untyped_storage().nbytes() == 0:
            continue
        seen.add(key)
        total += t.untyped_storage().nbytes()
    return total


def format_bytes(n: float) -> str:
    """Human-readable size in binary units (``"12.3 MiB"``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class StateBytes:
    """Bytes of the static training state; ``total`` is the sum of the four parts."""

    trainable_params: int
    frozen_params: int
    grads: int
    optimizer_state: int

    @property
    def total(self) -> int:
        return self.trainable_params + self.frozen_params + self.grads + self.optimizer_state

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def training_state_bytes(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> StateBytes:
    """Count parameter, gradient and optimizer-state bytes of ``model`` exactly.

    Every storage is counted once (tied weights are not double counted). Gradients are counted
    only where ``p.grad`` exists; optimizer state includes every tensor in ``optimizer.state``
    (e.g. Adam's ``exp_avg``, ``exp_avg_sq`` and its scalar ``step`` tensor).
    """
    seen: set = set()
    params = list(model.parameters())
    trainable = _unique_storage_bytes((p for p in params if p.requires_grad), seen)
    frozen = _unique_storage_bytes((p for p in params if not p.requires_grad), seen)
    grads = _unique_storage_bytes((p.grad for p in params if p.grad is not None), seen)
    opt = 0
    if optimizer is not None:
        state_tensors = (
            v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)
        )
        opt = _unique_storage_bytes(state_tensors, seen)
    return StateBytes(trainable, frozen, grads, opt)


def _is_parameter(t: torch.Tensor) -> bool:
    base = t._base if t._base is not None else t
    return isinstance(base, nn.Parameter)


def saved_activation_bytes(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Bytes of the tensors saved for backward while ``fn(*args, **kwargs)`` runs.

    Deduplicated by storage; parameters (and views of them) are excluded because they live in the
    training state anyway. The graph is released when ``fn``'s output goes out of scope.
    """
    seen: set = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if not _is_parameter(t):
            total += _unique_storage_bytes([t], seen)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args, **kwargs)
    del out
    return total


@dataclass(frozen=True)
class PeakMemory:
    """Peak memory of one call. ``peak_bytes`` is measured above ``baseline_bytes``.

    On CUDA the baseline is ``memory_allocated`` before the call and the peak comes from
    ``max_memory_allocated``; on CPU the baseline is the subprocess RSS after imports and the peak
    is its high-water mark (``VmHWM``) during the call.
    """

    device: str
    peak_bytes: int
    baseline_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _proc_status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux ``clear_refs``); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_child(fn: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[int, int]:
    import gc

    gc.collect()
    baseline = _proc_status_bytes("VmRSS") or 0
    if not _reset_peak_rss():  # fall back to the lifetime high-water mark
        baseline = max(baseline, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    fn(*args, **kwargs)
    peak = _proc_status_bytes("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return max(peak - baseline, 0), baseline


def peak_memory(
    fn: Callable[..., Any], *args: Any, device: str | torch.device = "cpu", **kwargs: Any
) -> PeakMemory:
    """Peak memory of ``fn(*args, **kwargs)`` on ``device``.

    CPU: ``fn`` runs in a fresh spawned subprocess, so it must be a picklable module-level
    function and its arguments picklable; what the subprocess imports to unpickle ``fn`` is part
    of the baseline, not of the peak.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        fn(*args, **kwargs)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - baseline
        return PeakMemory(str(device), int(peak), int(baseline))
    if device.type != "cpu":
        raise ValueError(f"peak_memory supports cpu and cuda devices, got {device}")
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        peak, baseline = pool.submit(_peak_rss_child, fn, args, kwargs).result()
    return PeakMemory("cpu", int(peak), int(baseline))
