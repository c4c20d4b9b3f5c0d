"""``SnellConfig``: every hyperparameter of a SNELL adapter, serialisable as JSON (peft-style)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from labcore.cli import UserError
from snell.kernels import GATES, KERNELS

__all__ = ["CONFIG_NAME", "SnellConfig"]

CONFIG_NAME = "adapter_config.json"
VIT_TARGETS = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]


@dataclass
class SnellConfig:
    """Configuration of SNELL (and of the KLoRA / LoRA baselines it contains).

    Defaults follow the official code: piecewise-linear kernel with P = 2 pieces, fixed
    α = (+0.1, −0.1), both factors ``kaiming_uniform(a=√5)``, the ``official`` gate, adapter
    Dropout 0.1 and DropPath 0.1, recompute on. ``sparsity`` is the fraction of ΔW zeroed
    (s = 0: plain KLoRA). Placement defaults to every linear of every timm ViT block with the
    fused ``attn.qkv`` split into q, k, v, and ``head`` + ``cls_token`` trainable.
    """

    r: int = field(default=8, metadata={"help": "rank (length of the factor rows)"})
    sparsity: float = field(default=0.0, metadata={"help": "fraction s of ΔW zeroed per matrix"})
    kernel: str = field(default="piecewise_linear", metadata={"help": f"one of {KERNELS}"})
    num_pieces: int = field(default=2, metadata={"help": "P pieces of the piecewise kernel"})
    alpha: tuple[float, ...] | None = field(
        default=None, metadata={"help": "piece coefficients; None = 0.1·(−1)^p"}
    )
    learn_alpha: bool = field(default=False, metadata={"help": "train α (paper) or not (code)"})
    norm_p: float = field(default=2.0, metadata={"help": "p of the (non-squared) distance"})
    gate: str = field(default="official", metadata={"help": f"one of {GATES}"})
    init: str = field(
        default="official",
        metadata={"help": "'official' (both factors kaiming) or 'lora' (A kaiming, B zero)"},
    )
    recompute: bool = field(default=True, metadata={"help": "checkpoint merge+gate+matmul"})
    adapter_dropout: float = field(default=0.1, metadata={"help": "dropout on adapter input"})
    adapter_drop_path: float = field(default=0.1, metadata={"help": "DropPath on adapter output"})
    target_modules: list[str] | str = field(
        default_factory=lambda: list(VIT_TARGETS),
        metadata={"help": "list: exact or suffix match of module names; str: full regex"},
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "modules never adapted (same matching rules)"}
    )
    fused_qkv_modules: list[str] = field(
        default_factory=lambda: ["attn.qkv"],
        metadata={"help": "fused q|k|v linears: split into 3 adapters, 3 thresholds"},
    )
    no_dropout_modules: list[str] = field(
        default_factory=lambda: ["attn.proj"],
        metadata={"help": "adapters that see their raw input (official: proj)"},
    )
    modules_to_save: list[str] = field(
        default_factory=lambda: ["head", "cls_token"],
        metadata={"help": "modules or parameters trained in full and saved with the adapter"},
    )
    layers_to_transform: list[int] | None = field(
        default=None, metadata={"help": "only these block indices (None: all)"}
    )
    layers_pattern: str = field(default="blocks", metadata={"help": "name of the block list"})
    base_model_name_or_path: str | None = field(default=None, metadata={"help": "for the record"})
    peft_type: str = field(default="SNELL", metadata={"help": "fixed tag"})

    def __post_init__(self) -> None:
        ints = {"r": self.r, "num_pieces": self.num_pieces}
        for name, v in ints.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{name} must be an integer >= 1, got {v!r}")
        if self.r % self.num_pieces:
            raise UserError(f"r={self.r} must be a multiple of num_pieces={self.num_pieces}")
        for name in ("adapter_dropout", "adapter_drop_path"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not 0.0 <= v < 1.0:
                raise UserError(f"{name} must be in [0, 1), got {v!r}")
        if not isinstance(self.norm_p, int | float) or not self.norm_p > 0:
            raise UserError(f"norm_p must be > 0, got {self.norm_p!r}")
        if self.kernel not in KERNELS:
            raise UserError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        if self.gate not in GATES:
            raise UserError(f"gate must be one of {GATES}, got {self.gate!r}")
        if self.init not in ("official", "lora"):
            raise UserError(f"init must be 'official' or 'lora', got {self.init!r}")
        if not isinstance(self.sparsity, int | float) or not 0.0 <= self.sparsity < 1.0:
            raise UserError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.alpha is None:
            self.alpha = tuple(0.1 * (-1) ** p for p in range(self.num_pieces))
        self.alpha = tuple(float(a) for a in self.alpha)
        if len(self.alpha) != self.num_pieces:
            raise UserError(f"alpha needs {self.num_pieces} values, got {len(self.alpha)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["alpha"] = list(self.alpha)
        return d

    def save_pretrained(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SnellConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"unknown SnellConfig keys: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> SnellConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: not a JSON adapter config ({e})") from None
        if not isinstance(d, dict):
            raise UserError(f"{path}: expected a JSON object")
        return cls.from_dict(d)
