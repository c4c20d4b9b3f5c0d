"""Loading student weights: a heurvidqa checkpoint, or an ALPRO checkpoint with its keys mapped.

ALPRO stores the TimeSformer under ``visual_encoder.model.`` in the facebookresearch/TimeSformer
(timm-style) naming and BERT under ``text_encoder.bert.``; the mapping to Hugging Face's
``TimesformerModel`` names is the one of transformers' TimeSformer conversion (``blocks.i.attn`` →
``encoder.layer.i.attention.attention`` …). The key names are from the public code's module
layout and are **not verified against a real ALPRO file here** (none can be downloaded): loading
reports every key it could not place, and ``strict=True`` turns that into an error.

``init_temporal_from_spatial`` is ALPRO's initialisation from an image ViT: the temporal attention
and its norm are copies of the spatial ones (and ``temporal_dense`` starts at zero in the
facebook code; here it is left as loaded or initialised).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from heurvidqa.model import AlproStudent
from labcore.cli import UserError

__all__ = ["alpro_to_heurvidqa", "init_temporal_from_spatial", "load_student_weights"]

_VIT = [
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^pos_embed$", "embeddings.position_embeddings"),
    (r"^time_embed$", "embeddings.time_embeddings"),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layer.\1.layernorm_before."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layer.\1.layernorm_after."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layer.\1.attention.attention.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^blocks\.(\d+)\.temporal_norm1\.", r"encoder.layer.\1.temporal_layernorm."),
    (r"^blocks\.(\d+)\.temporal_attn\.qkv\.",
     r"encoder.layer.\1.temporal_attention.attention.qkv."),
    (r"^blocks\.(\d+)\.temporal_attn\.proj\.",
     r"encoder.layer.\1.temporal_attention.output.dense."),
    (r"^blocks\.(\d+)\.temporal_fc\.", r"encoder.layer.\1.temporal_dense."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"^norm\.", "layernorm."),
]  # fmt: skip


def alpro_to_heurvidqa(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """ALPRO key names → this package's; returns (mapped state dict, keys that had no rule)."""
    out, unplaced = {}, []
    for k, v in sd.items():
        new = None
        if k.startswith("visual_encoder.model."):
            rest = k[len("visual_encoder.model.") :]
            for pat, rep in _VIT:
                if re.search(pat, rest):
                    new = "video.timesformer." + re.sub(pat, rep, rest)
                    break
        elif k.startswith("text_encoder.bert."):
            rest = k[len("text_encoder.bert.") :]
            if not rest.startswith("pooler."):
                new = "bert." + rest
        elif k.startswith(("vision_proj.", "text_proj.")):
            new = k
        elif k == "temp":
            new = "temp.raw"
        if new is None:
            unplaced.append(k)
        else:
            out[new] = v
    return out, unplaced


def init_temporal_from_spatial(student: AlproStudent) -> None:
    """Copy each layer's spatial attention and norm into its temporal attention (ALPRO init)."""
    with torch.no_grad():
        for layer in student.video.timesformer.encoder.layer:
            layer.temporal_attention.load_state_dict(layer.attention.state_dict())
            layer.temporal_layernorm.load_state_dict(layer.layernorm_before.state_dict())


def load_student_weights(student: AlproStudent, path: str | Path, strict: bool = False) -> dict:
    """Load ``path`` (heurvidqa ``student.pt``/pretrained state dict, or an ALPRO ``.pt``) into
    ``student``; heads whose shapes differ are skipped. Returns a report of what was skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "weights not found", str(path))
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a corrupt or foreign file: one clear line
        raise UserError(f"cannot read weights {path}: {e}") from None
    sd = ck.get("state_dict", ck.get("model", ck)) if isinstance(ck, dict) else None
    if not isinstance(sd, dict):
        raise UserError(f"{path}: no state dict inside")
    unplaced: list[str] = []
    if any(k.startswith(("visual_encoder.", "text_encoder.")) for k in sd):
        sd, unplaced = alpro_to_heurvidqa(sd)
    own = student.state_dict()
    shape_skipped = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    sd = {k: v for k, v in sd.items() if k in own and k not in shape_skipped}
    missing = [k for k in own if k not in sd]
    if strict and (unplaced or shape_skipped or missing):
        raise UserError(f"{path}: {len(unplaced)} keys without a mapping, {len(shape_skipped)} "
                        f"with other shapes, {len(missing)} missing (e.g. "
                        f"{(unplaced + shape_skipped + missing)[:3]})")  # fmt: skip
    student.load_state_dict(sd, strict=False)
    return {"loaded": len(sd), "unplaced": unplaced, "shape_skipped": shape_skipped,
            "missing": missing}  # fmt: skip
