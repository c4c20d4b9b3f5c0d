"""Inject SNELL adapters into a model by module names, train, merge, save and load (peft-shaped).

``get_snell_model(model, config)`` wraps every matching ``nn.Linear`` in a :class:`SnellLinear`,
freezes everything else and marks ``modules_to_save`` (``head``, ``cls_token``) trainable.
``save_pretrained`` writes only the adapter tensors and the ``modules_to_save`` tensors to
``adapter_model.safetensors`` plus ``adapter_config.json``; no mask or index exists to be saved.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from snell.config import SnellConfig
from snell.layer import SnellLinear

__all__ = [
    "WEIGHTS_NAME",
    "SnellModel",
    "from_pretrained",
    "get_snell_model",
    "mark_only_adapters_trainable",
]

WEIGHTS_NAME = "adapter_model.safetensors"


def _matches(name: str, pattern: list[str] | str | None) -> bool:
    """peft's rule: a str is a full regex; a list matches exactly or as a ``.``-suffix."""
    if pattern is None:
        return False
    if isinstance(pattern, str):
        return re.fullmatch(pattern, name) is not None
    return any(name == key or name.endswith("." + key) for key in pattern)


def _layer_index(name: str, layers_pattern: str) -> int | None:
    m = re.search(rf"(?:^|\.){re.escape(layers_pattern)}\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def _is_target(name: str, config: SnellConfig) -> bool:
    if not _matches(name, config.target_modules) or _matches(name, config.exclude_modules):
        return False
    if config.layers_to_transform is not None:
        return _layer_index(name, config.layers_pattern) in set(config.layers_to_transform)
    return True


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def mark_only_adapters_trainable(model: nn.Module, config: SnellConfig) -> None:
    """Freeze all but the adapter factors (α only with ``learn_alpha`` or a 3-scalar kernel)
    and the ``modules_to_save`` modules or parameters."""
    for name, p in model.named_parameters():
        p.requires_grad_(False)
        if ".snell_A." in name or ".snell_B." in name:
            p.requires_grad_(True)
        elif ".snell_alpha." in name:
            p.requires_grad_(config.learn_alpha or config.kernel in ("rbf", "sigmoid"))
    for key in config.modules_to_save:
        for _, p in _saved_parameters(model, [key]):
            p.requires_grad_(True)


def _saved_parameters(model: nn.Module, keys: list[str]) -> Iterator[tuple[str, nn.Parameter]]:
    """Parameters belonging to a module matched by ``keys``, or named exactly by a key."""
    for name, p in model.named_parameters():
        module_name = name.rpartition(".")[0]
        if name in keys or _matches(module_name, keys):
            yield name, p


class SnellModel(nn.Module):
    """A model with SNELL adapters; ``forward`` is the wrapped model's.

    Attributes: ``base_model`` (the wrapped model, modified in place), ``peft_config``
    (``{adapter_name: SnellConfig}``), ``active_adapter``.
    """

    prefix = "snell_"

    def __init__(self, model: nn.Module, config: SnellConfig, adapter_name: str = "default"):
        super().__init__()
        self.base_model = model
        self.peft_config = {adapter_name: config}
        self.active_adapter = adapter_name
        targets = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        targets = [n for n in targets if _is_target(n, config)]
        if not targets:
            raise ValueError(
                f"no nn.Linear matches target_modules={config.target_modules!r} in this model"
            )
        for name in targets:
            base = model.get_submodule(name)
            splits = 3 if _matches(name, config.fused_qkv_modules) else 1
            dropout = 0.0 if _matches(name, config.no_dropout_modules) else None
            _set_submodule(model, name, SnellLinear(base, config, adapter_name, splits, dropout))
        mark_only_adapters_trainable(model, config)
        self.targeted_module_names = targets

    @property
    def config(self) -> SnellConfig:
        return self.peft_config[self.active_adapter]

    def forward(self, *args, **kwargs):
        return self.base_model(*args, **kwargs)

    def snell_layers(self) -> Iterator[tuple[str, SnellLinear]]:
        for name, m in self.base_model.named_modules():
            if isinstance(m, SnellLinear):
                yield name, m

    # ---------------------------------------------------------------- reporting
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        params = list(self.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} || "
            f"trainable%: {100 * trainable / total:.4f}"
        )

    # ---------------------------------------------------------------- merging
    def merge_adapter(self) -> None:
        for _, layer in self.snell_layers():
            layer.merge()

    def unmerge_adapter(self) -> None:
        for _, layer in self.snell_layers():
            layer.unmerge()

    @contextlib.contextmanager
    def disable_adapter(self):
        """Context manager: run the frozen backbone (``modules_to_save`` stay as trained)."""
        layers = [layer for _, layer in self.snell_layers()]
        for layer in layers:
            layer.disable_adapters = True
        try:
            yield
        finally:
            for layer in layers:
                layer.disable_adapters = False

    def _unload(self, merge: bool) -> nn.Module:
        for name, layer in list(self.snell_layers()):
            if merge:
                layer.merge()
            _set_submodule(self.base_model, name, layer.base_layer)
        return self.base_model

    def merge_and_unload(self) -> nn.Module:
        """Fold ΔWˢᵀ into every base weight and return the plain model (no adapter modules)."""
        return self._unload(merge=True)

    def unload(self) -> nn.Module:
        """Return the plain model without merging (adapters dropped)."""
        return self._unload(merge=False)

    # ---------------------------------------------------------------- saving
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Adapter tensors (adapter name stripped, as peft saves) and ``modules_to_save``."""
        out = {}
        for name, p in self.base_model.named_parameters():
            head, kind, adapter = name.rsplit(".", 2) if name.count(".") >= 2 else ("", "", "")
            if kind in SnellLinear.adapter_layer_names and adapter == self.active_adapter:
                out[f"{head}.{kind}"] = p.detach()
        for name, p in _saved_parameters(self.base_model, self.config.modules_to_save):
            out[name] = p.detach()
        return out

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``adapter_model.safetensors`` and ``adapter_config.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous().cpu() for k, v in self.adapter_state_dict().items()}
        save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        self.config.save_pretrained(directory)
        return directory

    def load_adapter_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        expected = self.adapter_state_dict()
        missing, unexpected = set(expected) - set(tensors), set(tensors) - set(expected)
        if missing or unexpected:
            raise ValueError(
                f"adapter weights do not fit this model: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]}"
            )
        with torch.no_grad():
            for key, target in expected.items():
                if tensors[key].shape != target.shape:
                    raise ValueError(
                        f"{key}: shape {tuple(tensors[key].shape)} != {tuple(target.shape)}"
                    )
                target.copy_(tensors[key])

    @classmethod
    def from_pretrained(
        cls, model: nn.Module, directory: str | Path, is_trainable: bool = False
    ) -> SnellModel:
        """Inject adapters into ``model`` as configured in ``directory`` and load their weights."""
        directory = Path(directory)
        if not (directory / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"no {WEIGHTS_NAME} in {directory}")
        config = SnellConfig.from_pretrained(directory)
        wrapped = cls(model, config)
        wrapped.load_adapter_weights(load_file(str(directory / WEIGHTS_NAME)))
        if not is_trainable:
            wrapped.requires_grad_(False)
            wrapped.eval()
        return wrapped


def get_snell_model(
    model: nn.Module, config: SnellConfig, adapter_name: str = "default"
) -> SnellModel:
    """Wrap ``model``'s target linears in SNELL adapters (in place) and return a ``SnellModel``."""
    return SnellModel(model, config, adapter_name)


def from_pretrained(model: nn.Module, directory: str | Path, is_trainable: bool = False):
    """Functional alias of :meth:`SnellModel.from_pretrained`."""
    return SnellModel.from_pretrained(model, directory, is_trainable)
