"""Thin glue to ``torch.distributed`` so every ``train`` runs unchanged under ``torchrun``.

    torchrun --standalone --nproc_per_node 2 -m snell.cli train ...

:func:`init` reads the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and
starts the default process group (``nccl`` on CUDA, ``gloo`` on CPU); without torchrun it does
nothing and every helper below falls back to the single-process answer, so one code path serves
both. The engine is ``torch.distributed`` itself: DistributedDataParallel for gradients,
``all_reduce`` for metric sums, ``DistributedSampler`` for map-style datasets. Nothing here
launches processes or reimplements a collective.

Conventions the packages follow:

- The global batch size is what the user asked; each rank takes ``global / world_size``
  (:func:`per_rank_batch`, an error when it does not divide).
- Only rank 0 writes results, checkpoints and progress bars (:func:`is_main`;
  ``labcore.runs.write_result`` and ``labcore.cli.progress`` already obey it).
- Metrics are merged as *sums* (confusion matrices, hit counts, numerators and denominators),
  never as averages of per-rank averages, so a distributed evaluation gives the single-process
  number.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from labcore.cli import UserError

__all__ = [
    "PRECISIONS",
    "DistState",
    "all_gather_cat",
    "all_reduce",
    "all_reduce_dict",
    "autocast",
    "barrier",
    "check_precision",
    "grad_scaler",
    "init",
    "is_main",
    "launched",
    "per_rank_batch",
    "rank",
    "sampler",
    "set_epoch",
    "shard",
    "shutdown",
    "unwrap",
    "world_size",
    "wrap_model",
]

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DistState:
    """Where this process stands: its rank among ``world_size`` and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: not distributed

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True when the process was started by torchrun (or any launcher that sets ``WORLD_SIZE``)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _active() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def init(device: str | torch.device = "auto") -> DistState:
    """Start the process group when launched by torchrun; a no-op otherwise.

    ``device`` is the user's ``--device``; under torchrun a CUDA device becomes
    ``cuda:LOCAL_RANK``. Calling it twice is harmless.
    """
    from labcore.runs import resolve_device

    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise UserError(str(e)) from None
    if not launched():
        return DistState(0, 1, 0, dev, None)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not _active():
        tdist.init_process_group(backend=backend)
    return DistState(tdist.get_rank(), tdist.get_world_size(), local_rank, dev, backend)


def shutdown() -> None:
    """Destroy the process group if one is running."""
    if _active():
        tdist.destroy_process_group()


def rank() -> int:
    return tdist.get_rank() if _active() else 0


def world_size() -> int:
    return tdist.get_world_size() if _active() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one process that writes."""
    return rank() == 0


def barrier() -> None:
    if _active():
        tdist.barrier()


_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` over ranks in place (``sum``, ``max`` or ``min``) and return it."""
    if op not in _OPS:
        raise ValueError(f"op must be one of {sorted(_OPS)}, got {op!r}")
    if _active() and world_size() > 1:
        tdist.all_reduce(tensor, op=getattr(tdist.ReduceOp, _OPS[op]))
    return tensor


def _reduce_device() -> torch.device:
    if _active() and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_dict(values: dict[str, float | int | torch.Tensor]) -> dict[str, float]:
    """Sum each scalar of ``values`` over ranks in one collective; returns plain floats.

    Pass sums (hits, counts, numerators), not per-rank means: the merged value of a mean is
    ``all_reduce_dict({"num": s, "den": n})`` then ``num / den``. Float64 on the wire so integer
    counts up to 2**53 stay exact.
    """
    keys = sorted(values)
    flat = torch.tensor(
        [float(torch.as_tensor(values[k]).sum()) for k in keys],
        dtype=torch.float64,
        device=_reduce_device(),
    )
    all_reduce(flat)
    return dict(zip(keys, flat.tolist(), strict=True))


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 in rank order (lengths may differ)."""
    if not (_active() and world_size() > 1):
        return tensor
    dev = _reduce_device()
    local = tensor.detach().to(dev)
    n = torch.tensor([local.shape[0]], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    tdist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.zeros_like(padded) for _ in range(world_size())]
    tdist.all_gather(parts, padded)
    out = torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])
    return out.to(tensor.device)


def wrap_model(model: torch.nn.Module, **ddp_kwargs) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when world size > 1, else ``model`` itself.

    The model must already be on its device; on CUDA ``device_ids`` is set to the local device.
    """
    if not (_active() and world_size() > 1):
        return model
    from torch.nn.parallel import DistributedDataParallel

    param = next(model.parameters(), None)
    if param is not None and param.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [param.device.index])
    return DistributedDataParallel(model, **ddp_kwargs)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (the model itself when not wrapped)."""
    return getattr(model, "module", model)


def sampler(dataset, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
    """A ``DistributedSampler`` over a map-style dataset when world size > 1, else ``None``.

    ``None`` lets the caller keep its single-process ``DataLoader(shuffle=...)`` unchanged. Call
    :func:`set_epoch` each epoch so every epoch draws a new permutation from ``seed``.
    """
    if not (_active() and world_size() > 1):
        return None
    from torch.utils.data import DistributedSampler

    return DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)


def set_epoch(loader_or_sampler, epoch: int) -> None:
    """Reseed a ``DistributedSampler`` (or a DataLoader's) for ``epoch``; no-op for others."""
    s = getattr(loader_or_sampler, "sampler", loader_or_sampler)
    if hasattr(s, "set_epoch"):
        s.set_epoch(epoch)


def shard(n: int) -> torch.Tensor:
    """This rank's share of ``range(n)``: ``rank, rank + world, ...`` (all of it in one process)."""
    return torch.arange(rank(), n, world_size())


def per_rank_batch(global_batch: int) -> int:
    """``global_batch / world_size``; a :class:`UserError` when it does not divide evenly."""
    w = world_size()
    if global_batch < 1:
        raise UserError(f"batch size must be >= 1, got {global_batch}")
    if global_batch % w:
        raise UserError(
            f"global batch size {global_batch} does not divide over {w} processes; "
            f"choose a multiple of {w}"
        )
    return global_batch // w


def check_precision(precision: str, device: str | torch.device) -> None:
    """Reject unknown precisions and fp16 on CPU (autocast on CPU supports bf16 only)."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise UserError("--precision fp16 needs a CUDA device (use bf16 on CPU)")


def autocast(precision: str, device: str | torch.device):
    """``torch.autocast`` for ``bf16``/``fp16`` on ``device``; a null context for ``fp32``.

    Autocast keeps its own fp32 list (reductions, softmax, norms, losses); methods that need more
    (quantile thresholds, AUC sums) compute those parts in fp32 explicitly and say so.
    """
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler:
    """A ``GradScaler`` enabled only for fp16 (on CUDA); disabled (a pass-through) otherwise."""
    check_precision(precision, device)
    dev = torch.device(device).type
    return torch.amp.GradScaler(dev, enabled=precision == "fp16")
