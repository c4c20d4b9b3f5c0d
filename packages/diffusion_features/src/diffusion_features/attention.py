"""Attention maps through diffusers' own extension point: an attention processor.

SDPA never materialises the probabilities, so a hook cannot see them. :class:`MapRecorder` is
an ``AttnProcessor`` subclass that runs the classic (non-fused) path of diffusers'
``AttnProcessor`` — ``to_q``/``to_k``/``to_v`` (their hooks fire as usual), head split,
``attn.get_attention_scores`` = softmax(QKᵀ·scale) — and records the probabilities averaged
over heads, (B, Nq, Nk), before finishing the attention as usual. It is installed per module
with ``set_processor`` and the previous processor is put back on exit.

:func:`up_cross_maps` is the official ``--attention up_cross`` feature: every cross-attention
map of the up stage whose query grid side lies in [img/32, img/16] (SD1.5@512: the 16² and 32²
levels), averaged over layers per grid size, reshaped to (B, 77, s, s), nearest-resized to
img/8 and concatenated (2 × 77 = 154 channels for SD1.5).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor

__all__ = ["MapRecorder", "record_maps", "up_cross_maps"]


class MapRecorder(AttnProcessor):
    """Classic attention that also stores ``probs.mean(heads)`` as ``sink[key]`` (fp32 → dtype)."""

    def __init__(self, key: str, sink: dict, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.key, self.sink, self.dtype = key, sink, dtype

    def __call__(
        self,
        attn,
        hidden_states,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,
        *args,
        **kwargs,
    ):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, seq = (
            hidden_states if encoder_hidden_states is None else encoder_hidden_states
        ).shape[:2]
        attention_mask = attn.prepare_attention_mask(attention_mask, seq, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        query = attn.head_to_batch_dim(query)
        probs = attn.get_attention_scores(query, key, attention_mask)  # (B·heads, Nq, Nk)
        with torch.no_grad():
            m = probs.detach().float().unflatten(0, (batch, attn.heads)).mean(1)
            self.sink[self.key] = m.to(self.dtype) if self.dtype is not None else m
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextlib.contextmanager
def record_maps(model: torch.nn.Module, modules: dict[str, str], sink: dict, dtype=None):
    """Install a :class:`MapRecorder` on each ``{key: attention module path}``; restore after."""
    saved = {}
    try:
        for key, path in modules.items():
            attn = model.get_submodule(path)
            saved[path] = attn.processor
            attn.set_processor(MapRecorder(key, sink, dtype))
        yield sink
    finally:
        for path, proc in saved.items():
            model.get_submodule(path).set_processor(proc)


def up_cross_maps(
    maps: dict[str, torch.Tensor],
    sides: dict[str, tuple[int, int]],
    latent_hw: tuple[int, int],
    lo: int,
    hi: int,
) -> torch.Tensor:
    """The 154-channel ``up_cross`` feature from recorded up-stage cross maps.

    Args:
        maps: ``{id: (B, Nq, 77)}`` head-averaged cross-attention probabilities.
        sides: ``{id: (h, w)}`` the query grid of each map.
        latent_hw: the latent size (img/8); the output resolution.
        lo, hi: keep maps whose grid height lies in [lo, hi] (img/32 and img/16).

    Returns:
        (B, 77·G, H, W) for the G grid sizes kept, coarsest first.
    """
    groups: dict[tuple[int, int], list[torch.Tensor]] = {}
    for k, m in maps.items():
        h, w = sides[k]
        if lo <= h <= hi:
            groups.setdefault((h, w), []).append(m.float())
    parts = []
    for (h, w), ms in sorted(groups.items()):
        mean = torch.stack(ms).mean(0)  # (B, Nq, Nk), averaged over layers
        grid = mean.transpose(1, 2).reshape(mean.shape[0], mean.shape[2], h, w)
        parts.append(F.interpolate(grid, size=latent_hw, mode="nearest"))
    if not parts:
        raise ValueError(f"no cross-attention map with grid side in [{lo}, {hi}]")
    return torch.cat(parts, dim=1)
