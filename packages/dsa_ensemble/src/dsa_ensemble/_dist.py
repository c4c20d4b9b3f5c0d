"""``labcore.dist`` when this labcore has it; otherwise a minimal stand-in with the same names.

The stand-in exists only so the package runs against a labcore release that predates
``labcore.dist``; it covers the helpers this package calls and nothing else.
"""

from __future__ import annotations

try:  # pragma: no cover - exercised whichever labcore is installed
    from labcore.dist import (  # noqa: F401
        all_gather_cat,
        all_reduce_dict,
        autocast,
        check_precision,
        grad_scaler,
        init,
        is_main,
        per_rank_batch,
        rank,
        shard,
        shutdown,
        world_size,
        wrap_model,
    )
except ImportError:  # pragma: no cover
    import contextlib
    import os
    from dataclasses import dataclass

    import torch
    import torch.distributed as tdist

    from labcore.cli import UserError

    @dataclass(frozen=True)
    class _State:
        rank: int
        world_size: int
        local_rank: int
        device: torch.device
        backend: str | None

    def _active() -> bool:
        return tdist.is_available() and tdist.is_initialized()

    def init(device="auto"):
        from labcore.runs import resolve_device

        try:
            dev = resolve_device(device)
        except ValueError as e:
            raise UserError(str(e)) from None
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return _State(0, 1, 0, dev, None)
        local = int(os.environ.get("LOCAL_RANK", 0))
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if not _active():
            tdist.init_process_group(backend=backend)
        return _State(tdist.get_rank(), tdist.get_world_size(), local, dev, backend)

    def shutdown() -> None:
        if _active():
            tdist.destroy_process_group()

    def rank() -> int:
        return tdist.get_rank() if _active() else 0

    def world_size() -> int:
        return tdist.get_world_size() if _active() else 1

    def is_main() -> bool:
        return rank() == 0

    def shard(n: int) -> torch.Tensor:
        return torch.arange(rank(), n, world_size())

    def all_reduce_dict(values: dict) -> dict:
        keys = sorted(values)
        flat = torch.tensor([float(torch.as_tensor(values[k]).sum()) for k in keys],
                            dtype=torch.float64)  # fmt: skip
        if _active() and world_size() > 1:
            if tdist.get_backend() == "nccl":
                flat = flat.cuda()
            tdist.all_reduce(flat)
        return dict(zip(keys, flat.cpu().tolist(), strict=True))

    def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
        if not (_active() and world_size() > 1):
            return tensor
        n = torch.tensor([tensor.shape[0]], device=tensor.device)
        sizes = [torch.zeros_like(n) for _ in range(world_size())]
        tdist.all_gather(sizes, n)
        longest = int(max(s.item() for s in sizes))
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor.detach()
        parts = [torch.zeros_like(padded) for _ in range(world_size())]
        tdist.all_gather(parts, padded)
        return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])

    def wrap_model(model, **kw):
        if not (_active() and world_size() > 1):
            return model
        from torch.nn.parallel import DistributedDataParallel

        p = next(model.parameters(), None)
        if p is not None and p.device.type == "cuda":
            kw.setdefault("device_ids", [p.device.index])
        return DistributedDataParallel(model, **kw)

    def per_rank_batch(global_batch: int) -> int:
        w = world_size()
        if global_batch % w:
            raise UserError(f"global batch size {global_batch} does not divide over {w} processes")
        return global_batch // w

    def check_precision(precision: str, device) -> None:
        if precision not in ("fp32", "bf16", "fp16"):
            raise UserError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
        if precision == "fp16" and torch.device(device).type != "cuda":
            raise UserError("--precision fp16 needs a CUDA device (use bf16 on CPU)")

    def autocast(precision: str, device):
        check_precision(precision, device)
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=torch.device(device).type, dtype=dtype)

    def grad_scaler(precision: str, device):
        check_precision(precision, device)
        return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")
