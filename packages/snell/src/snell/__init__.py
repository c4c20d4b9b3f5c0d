"""SNELL: sparse tuning with kernelized LoRA (Shen et al., NeurIPS 2024), peft-shaped for timm.

Public API: :class:`SnellConfig`, :func:`get_snell_model`, :class:`SnellModel` (with
``print_trainable_parameters``, ``merge_and_unload``, ``save_pretrained``, ``from_pretrained``),
:class:`SnellLinear`, the kernel/gate functions, :func:`train` / :func:`evaluate` with
:class:`TrainSettings` (what ``snell train`` / ``snell evaluate`` run), and the baselines used by
the benchmark.
"""

from snell.config import SnellConfig
from snell.finetune import TrainResult, TrainSettings, evaluate, train
from snell.kernels import gate_delta, kernel_delta, magnitude_threshold
from snell.layer import SnellLinear
from snell.model import SnellModel, from_pretrained, get_snell_model, mark_only_adapters_trainable

__version__ = "0.3.0"

__all__ = [
    "SnellConfig",
    "SnellLinear",
    "SnellModel",
    "TrainResult",
    "TrainSettings",
    "__version__",
    "evaluate",
    "from_pretrained",
    "gate_delta",
    "get_snell_model",
    "kernel_delta",
    "magnitude_threshold",
    "mark_only_adapters_trainable",
    "train",
]
