"""The stored-index sparse-tuning baseline (SPT / GPS style) that SNELL is compared against.

The same weight matrices SNELL adapts are made trainable in full. For each matrix (each q / k / v
slice of a fused qkv separately) a mask keeping the top ``1 − s`` entries of the accumulated
``|∂L/∂W|`` over a few batches is chosen once and stored as a buffer (``bool`` mask or ``int64``
flat indices). A gradient hook multiplies ``∂L/∂W`` by the mask, so the optimizer keeps
full-size gradients and full-size AdamW moments; weight decay is 0 on these matrices so pruned
entries never move (decoupled decay would otherwise shrink them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from snell.model import _matches

__all__ = ["StoredIndexSparse", "select_gradient_masks"]

MASK_BUFFER = "sparse_mask"


def _target_linears(model: nn.Module, target_modules: list[str]) -> dict[str, nn.Linear]:
    return {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and _matches(n, target_modules)
    }


def _top_fraction_mask(score: Tensor, keep: float, splits: int) -> Tensor:
    """Bool mask of the top ``keep`` fraction of ``score`` (m, n), per row-block of m/S rows."""
    flat = score.reshape(splits, -1)
    k = max(1, round(keep * flat.shape[1]))
    idx = flat.topk(k, dim=1).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
    return mask.reshape(score.shape)


def select_gradient_masks(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, object], Tensor],
    batches: Iterable,
    target_modules: list[str],
    sparsity: float,
    fused_qkv_modules: tuple[str, ...] = ("attn.qkv",),
) -> dict[str, Tensor]:
    """Masks keeping the top ``1 − sparsity`` of accumulated ``|grad|`` per matrix (or slice).

    ``loss_fn(model, batch)`` returns a scalar loss. Gradients are accumulated in the weight's
    ``.grad`` and cleared afterwards.
    """
    linears = _target_linears(model, target_modules)
    flags = {n: m.weight.requires_grad for n, m in linears.items()}
    score = {n: torch.zeros_like(m.weight) for n, m in linears.items()}
    for m in linears.values():
        m.weight.requires_grad_(True)
    for batch in batches:
        loss_fn(model, batch).backward()
        for n, m in linears.items():
            score[n] += m.weight.grad.abs()
            m.weight.grad = None
    model.zero_grad(set_to_none=True)
    for n, m in linears.items():
        m.weight.requires_grad_(flags[n])
    return {
        n: _top_fraction_mask(s, 1.0 - sparsity, 3 if _matches(n, list(fused_qkv_modules)) else 1)
        for n, s in score.items()
    }


class StoredIndexSparse:
    """Apply stored masks to a model: full-size trainable W, masked gradients, stored indices.

    Args:
        model: the model (its other parameters keep their ``requires_grad``).
        masks: ``{linear name: bool mask (m, n)}`` from :func:`select_gradient_masks`.
        index_format: ``"bool"`` stores the mask (1 B per entry); ``"int64"`` stores the kept
            flat indices (8 B per kept entry) and rebuilds the mask in the hook.
    """

    def __init__(self, model: nn.Module, masks: dict[str, Tensor], index_format: str = "bool"):
        if index_format not in ("bool", "int64"):
            raise ValueError(f"index_format must be 'bool' or 'int64', got {index_format!r}")
        self.model, self.index_format = model, index_format
        self.handles = []
        for name, mask in masks.items():
            layer = model.get_submodule(name)
            stored = mask if index_format == "bool" else mask.flatten().nonzero().squeeze(1)
            layer.register_buffer(MASK_BUFFER, stored, persistent=True)
            layer.weight.requires_grad_(True)
            self.handles.append(layer.weight.register_hook(self._hook(layer)))
        self.names = list(masks)

    def _hook(self, layer: nn.Linear) -> Callable[[Tensor], Tensor]:
        def mask_grad(grad: Tensor) -> Tensor:
            stored = getattr(layer, MASK_BUFFER)
            if self.index_format == "bool":
                return grad * stored
            keep = torch.zeros(grad.numel(), dtype=grad.dtype, device=grad.device)
            return grad * keep.index_fill_(0, stored, 1.0).view_as(grad)

        return mask_grad

    def index_bytes(self) -> int:
        """Bytes held by the stored masks / indices."""
        return sum(
            getattr(self.model.get_submodule(n), MASK_BUFFER).untyped_storage().nbytes()
            for n in self.names
        )

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: the masked matrices without weight decay, the rest with it."""
        masked = {id(self.model.get_submodule(n).weight) for n in self.names}
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        return [
            {"params": [p for p in trainable if id(p) in masked], "weight_decay": 0.0},
            {"params": [p for p in trainable if id(p) not in masked], "weight_decay": weight_decay},
        ]
