"""n2gnn checkpoints: what ``train`` and ``import-official`` write and ``evaluate`` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from labcore.cli import UserError

KEYS = ("dataset", "level", "config", "state_dict", "seed", "fold")


def save_checkpoint(path: str | Path, **record: Any) -> Path:
    """Write ``record`` (the :data:`KEYS`, plus anything else) atomically: never half a file."""
    missing = [k for k in KEYS if k not in record]
    if missing:
        raise ValueError(f"checkpoint record lacks {', '.join(missing)}")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(record, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an n2gnn checkpoint; a missing, corrupt, truncated or foreign file is a
    ``UserError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "No such file", str(path))
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, empty or not a torch file
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        raise UserError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(ck, dict) or any(k not in ck for k in KEYS):
        raise UserError(
            f"not an n2gnn checkpoint: {path} (expected the keys {', '.join(KEYS)}; "
            "official N² files go through `n2gnn import-official`)"
        )
    if not isinstance(ck["config"], dict):
        raise UserError(f"not an n2gnn checkpoint: {path} (config is not a mapping)")
    return ck
