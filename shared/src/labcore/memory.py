"""Exact memory accounting for training runs.

Three views of memory, from cheapest to most complete:

* :func:`training_state_bytes` -- the *static* training state: parameters (trainable and frozen),
  gradients that exist, optimizer state. Counted from tensor storages, each storage once.
* :func:`saved_activation_bytes` -- the tensors autograd keeps for backward while ``fn`` runs,
  seen through :func:`torch.autograd.graph.saved_tensors_hooks`, each storage once, parameters
  excluded. Checkpointed regions save only their boundary, so the hook sees what recompute saves.
* :func:`peak_memory` -- the peak while ``fn`` runs, by one of two methods:

  - ``"allocator"``: CUDA ``max_memory_allocated`` on a GPU; on CPU the peak resident set size of
    ``fn`` run in a fresh subprocess, above the RSS after imports. On CPU this includes what
    glibc keeps after ``free`` and so depends on the allocation pattern, not only on the tensors.
  - ``"tensors"``: the peak of live tensor-storage bytes, counted by
    :class:`TensorMemoryTracker` on any device. This is the quantity CUDA's
    ``max_memory_allocated`` reports, without the caching allocator's block rounding and without
    scratch buffers that kernels allocate internally: the CPU analogue of a GPU peak.
"""

from __future__ import annotations

import functools
import gc
import multiprocessing as mp
import resource
import threading
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = [
    "PeakMemory",
    "StateBytes",
    "TensorMemoryTracker",
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
        # detached: a saved *output* packed as itself would hold its own grad_fn, a reference
        # cycle through C++ that keeps the whole graph (and the model) alive
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args, **kwargs)
    del out
    return total


# ``torch.tensor(data)`` builds its tensor below the dispatcher and shows it to modes as the
# (aliasing) output of lift_fresh: a new storage all the same.
_LIFT_FRESH = torch.ops.aten.lift_fresh.default


def _strided_on(t: object, device: torch.device) -> bool:
    """Whether ``t`` is a strided tensor (one with a storage) on ``device``."""
    if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
        return False
    return t.device.type == device.type and device.index in (None, t.device.index)


class TensorMemoryTracker(TorchDispatchMode):
    """Live and peak bytes of the tensor storages allocated on ``device`` while active.

    Every aten op passes through :meth:`__torch_dispatch__`. Each output the op's schema does not
    mark as an alias of an input (views, in-place and ``out=`` results are aliases) is a new
    storage, as is the tensor ``torch.tensor(data)`` builds: it is counted once, with its
    ``nbytes``, and uncounted by a weak-reference callback when it is freed. This covers forward,
    backward (autograd runs its ops under the mode, checkpoint recomputation included) and
    optimizer steps. Storages that existed on entry are not counted; neither are scratch buffers
    kernels allocate internally or memory allocated outside aten (numpy arrays, mmapped files).

    >>> with TensorMemoryTracker("cpu") as mem:
    ...     x = torch.ones(1024)
    ...     del x
    >>> mem.peak_bytes, mem.current_bytes
    (4096, 0)
    """

    def __init__(self, device: str | torch.device = "cpu"):
        super().__init__()
        self.device = torch.device(device)
        self.current_bytes = 0
        self.peak_bytes = 0
        self._refs: dict[int, weakref.ref] = {}
        self._lock = threading.RLock()  # frees may run on autograd threads or inside gc

    def reset_peak(self) -> None:
        """Restart the peak from the bytes live now."""
        with self._lock:
            self.peak_bytes = self.current_bytes

    def _counts(self, t: object) -> bool:
        return _strided_on(t, self.device)

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key, n = id(storage), storage.nbytes()
        with self._lock:
            if key in self._refs:
                return
            self._refs[key] = weakref.ref(storage, functools.partial(self._release, key, n))
            self.current_bytes += n
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def _release(self, key: int, n: int, _ref: weakref.ref) -> None:
        with self._lock:
            if self._refs.pop(key, None) is not None:
                self.current_bytes -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        returns = func._schema.returns
        values = (out,) if len(returns) == 1 else (out or ())
        for ret, value in zip(returns, values, strict=True):
            if ret.alias_info is None or func is _LIFT_FRESH:
                for t in tree_leaves(value):
                    if self._counts(t):
                        self._track(t)
        return out


def _live_tensor_bytes(device: torch.device) -> int:
    """Bytes of the strided tensors on ``device`` reachable from Python, each storage once."""
    # type(), not isinstance(): some module objects warn when their __class__ is looked up
    tensors = (
        o for o in gc.get_objects() if issubclass(type(o), torch.Tensor) and _strided_on(o, device)
    )
    return _unique_storage_bytes(tensors, set())


@dataclass(frozen=True)
class PeakMemory:
    """Peak memory of one call. ``peak_bytes`` is measured above ``baseline_bytes``.

    ``method="allocator"``: on CUDA the baseline is ``memory_allocated`` before the call and the
    peak comes from ``max_memory_allocated``; on CPU the baseline is the subprocess RSS after
    imports (and ``setup``) and the peak is its high-water mark (``VmHWM``) during the call.
    ``method="tensors"``: the baseline is the bytes of tensors on the device reachable from Python
    before the call and the peak is :class:`TensorMemoryTracker`'s peak during it.
    """

    device: str
    peak_bytes: int
    baseline_bytes: int
    method: str = "allocator"

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


def _prepared(fn: Callable, setup: Callable | None, args: tuple, kwargs: dict) -> Callable[[], Any]:
    """The measured call: ``fn(*args, **kwargs)``, or ``fn(setup(*args, **kwargs))``."""
    if setup is None:
        return functools.partial(fn, *args, **kwargs)
    return functools.partial(fn, setup(*args, **kwargs))


def _peak_rss_child(
    fn: Callable, setup: Callable | None, args: tuple, kwargs: dict
) -> tuple[int, int]:
    call = _prepared(fn, setup, args, kwargs)
    gc.collect()
    baseline = _proc_status_bytes("VmRSS") or 0
    if not _reset_peak_rss():  # fall back to the lifetime high-water mark
        baseline = max(baseline, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    call()
    peak = _proc_status_bytes("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return max(peak - baseline, 0), baseline


def peak_memory(
    fn: Callable[..., Any],
    *args: Any,
    device: str | torch.device = "cpu",
    method: str = "allocator",
    setup: Callable[..., Any] | None = None,
    **kwargs: Any,
) -> PeakMemory:
    """Peak memory of ``fn(*args, **kwargs)`` on ``device``.

    Args:
        method: ``"allocator"`` (CUDA allocator statistics; CPU peak RSS) or ``"tensors"``
            (live tensor-storage bytes, :class:`TensorMemoryTracker`, on any device).
        setup: optional; ``state = setup(*args, **kwargs)`` runs first, outside the
            measurement, and ``fn(state)`` is what is measured (e.g. build a model, then train).

    CPU with ``"allocator"``: the call runs in a fresh spawned subprocess, so ``fn`` and
    ``setup`` must be picklable module-level functions and the arguments picklable; what the
    subprocess imports to unpickle them is part of the baseline, not of the peak. The other
    cases run in this process.
    """
    if method not in ("allocator", "tensors"):
        raise ValueError(f"method must be 'allocator' or 'tensors', got {method!r}")
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"peak_memory supports cpu and cuda devices, got {device}")
    if method == "tensors":
        call = _prepared(fn, setup, args, kwargs)
        gc.collect()
        baseline = _live_tensor_bytes(device)
        with TensorMemoryTracker(device) as mem:
            call()
        return PeakMemory(str(device), mem.peak_bytes, baseline, method)
    if device.type == "cuda":
        call = _prepared(fn, setup, args, kwargs)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - baseline
        return PeakMemory(str(device), int(peak), int(baseline), method)
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        peak, baseline = pool.submit(_peak_rss_child, fn, setup, args, kwargs).result()
    return PeakMemory("cpu", int(peak), int(baseline), method)
