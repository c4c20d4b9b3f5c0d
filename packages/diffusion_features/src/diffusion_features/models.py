"""Backbones: tiny random-init diffusers models with the real block topologies, and local loading.

The tiny models keep what the activation catalogue depends on (block types, levels, resnets per
level, transformer depth per level, self + cross attention per transformer block) and shrink
only the widths. Nothing here downloads: real weights load from a local diffusers folder (or a
hub id already in the local cache) with ``local_files_only=True`` unless ``HF_HUB_OFFLINE`` is
explicitly ``0`` and the caller allows network access.

Random-init weights carry no learned features: any number measured on them checks the
machinery, never the paper's claims.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from labcore.cli import UserError

__all__ = [
    "TINY_MODELS",
    "Backbone",
    "full_sd15",
    "load_backbone",
    "sd15_scheduler",
    "sdxl_scheduler",
    "tiny_flux",
    "tiny_pixart",
    "tiny_sd15",
    "tiny_sdxl",
    "tiny_vae",
]


@dataclass
class Backbone:
    """The parts the extractor needs. ``kind`` is ``"unet"``, ``"pixart"`` or ``"flux"``.

    ``vae`` may be None (latents are then given directly); ``scheduler`` defaults to the
    family's img2img scheduler; ``text_encoder``/``tokenizer`` (and ``text_encoder_2``/
    ``tokenizer_2`` for SDXL) are optional: without them prompts are given as embeddings.
    """

    model: torch.nn.Module
    kind: str
    scheduler: Any
    vae: torch.nn.Module | None = None
    text_encoder: torch.nn.Module | None = None
    tokenizer: Any = None
    text_encoder_2: torch.nn.Module | None = None
    tokenizer_2: Any = None
    img_size: int = 512
    name: str = "custom"
    extra: dict = field(default_factory=dict)

    @property
    def is_sdxl(self) -> bool:
        cfg = getattr(self.model, "config", None)
        return self.kind == "unet" and getattr(cfg, "addition_embed_type", None) == "text_time"

    def to(self, device=None, dtype=None) -> Backbone:
        for m in (self.model, self.vae, self.text_encoder, self.text_encoder_2):
            if m is not None:
                m.to(device=device, dtype=dtype)
        return self


def sd15_scheduler():
    """SD1.5's default scheduler config (PNDM, scaled-linear betas, steps_offset 1, skip PRK)."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )


def sdxl_scheduler(timestep_spacing: str = "leading"):
    """SDXL's default scheduler config (Euler discrete, "leading" spacing, steps_offset 1)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing=timestep_spacing,
        interpolation_type="linear",
        use_karras_sigmas=False,
    )


def tiny_vae(latent_channels: int = 4, seed: int = 0):
    """A 2-level (factor 2) random-init AutoencoderKL, scaling factor 0.18215 as SD1.5."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=0.18215,
    ).eval()


def tiny_sd15(width: int = 32, cross_dim: int = 32, seed: int = 0, sample_size: int = 64):
    """SD1.5 topology: 3 CrossAttnDown + Down, mid, Up + 3 CrossAttnUp, 2 resnets per level
    (3 in the up stage), one transformer layer per ViT; widths (w, w, 2w, 2w)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(width, width, 2 * width, 2 * width),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        layers_per_block=2,
        cross_attention_dim=cross_dim,
        attention_head_dim=8,
        norm_num_groups=min(8, width),
    ).eval()


def full_sd15(seed: int = 0):
    """The full-size SD1.5 UNet config (860 M parameters), random init (for the bench)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
    ).eval()


def tiny_sdxl(width: int = 32, cross_dim: int = 32, seed: int = 0, sample_size: int = 32):
    """SDXL topology: Down + 2 CrossAttnDown with transformer depths (1, 2, 10), mid of depth
    10, 2 CrossAttnUp (10, 2) + Up, "text_time" added conditions; widths (w, 2w, 2w)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    time_dim = 8
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(width, 2 * width, 2 * width),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        transformer_layers_per_block=(1, 2, 10),
        cross_attention_dim=cross_dim,
        attention_head_dim=8,
        norm_num_groups=min(8, width),
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=cross_dim + 6 * time_dim,
        use_linear_projection=True,
    ).eval()


def tiny_pixart(num_layers: int = 4, seed: int = 0, sample_size: int = 16, cross_dim: int = 32):
    """PixArt-α/Σ topology (``transformer_blocks[i]`` with attn1 self, attn2 cross), tiny."""
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    return PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=num_layers,
        cross_attention_dim=32,
        caption_channels=cross_dim,
        sample_size=sample_size,
        patch_size=2,
        use_additional_conditions=False,
    ).eval()


def tiny_flux(num_layers: int = 2, num_single_layers: int = 2, seed: int = 0):
    """Flux topology (double-stream ``transformer_blocks`` + ``single_transformer_blocks``)."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=num_layers,
        num_single_layers=num_single_layers,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6),
    ).eval()


def _tiny(name: str, seed: int = 0) -> Backbone:
    if name == "tiny-sd15":
        return Backbone(
            tiny_sd15(seed=seed),
            "unet",
            sd15_scheduler(),
            vae=tiny_vae(seed=seed),
            img_size=128,
            name=name,
        )
    if name == "tiny-sdxl":
        return Backbone(
            tiny_sdxl(seed=seed),
            "unet",
            sdxl_scheduler(),
            vae=tiny_vae(seed=seed),
            img_size=64,
            name=name,
        )
    if name == "tiny-pixart":
        from diffusers import DPMSolverMultistepScheduler

        return Backbone(
            tiny_pixart(seed=seed),
            "pixart",
            DPMSolverMultistepScheduler(),
            vae=tiny_vae(seed=seed),
            img_size=32,
            name=name,
        )
    if name == "tiny-flux":
        from diffusers import FlowMatchEulerDiscreteScheduler

        return Backbone(
            tiny_flux(seed=seed), "flux", FlowMatchEulerDiscreteScheduler(), img_size=32, name=name
        )
    raise AssertionError(name)


TINY_MODELS = ("tiny-sd15", "tiny-sdxl", "tiny-pixart", "tiny-flux")


def _kind_of(model) -> str:
    name = type(model).__name__
    if name == "UNet2DConditionModel":
        return "unet"
    if name == "PixArtTransformer2DModel":
        return "pixart"
    if name == "FluxTransformer2DModel":
        return "flux"
    raise UserError(
        f"unsupported backbone {name}; supported: UNet2DConditionModel, "
        "PixArtTransformer2DModel, FluxTransformer2DModel"
    )


_COMPONENT = {"unet": "UNet2DConditionModel", "transformer": None}


def load_backbone(
    source: str | Path,
    *,
    seed: int = 0,
    img_size: int | None = None,
    local_files_only: bool = True,
    torch_dtype: torch.dtype | None = None,
) -> Backbone:
    """``tiny-sd15 | tiny-sdxl | tiny-pixart | tiny-flux``, a diffusers pipeline folder (with
    ``model_index.json`` and ``unet/`` or ``transformer/``), a single model folder (with
    ``config.json``), or a hub id already in the local cache.

    Only the parts that exist are loaded (a missing VAE or text encoder is not an error: latents
    and prompt embeddings can be given directly). ``img_size`` defaults to the family's (512 for
    SD1.x/2.x, 1024 for SDXL and PixArt-Σ).
    """
    name = str(source)
    if name in TINY_MODELS:
        bb = _tiny(name, seed)
        if img_size:
            bb.img_size = img_size
        return bb
    path = Path(name)
    kw: dict[str, Any] = {"local_files_only": local_files_only}
    if torch_dtype is not None:
        kw["torch_dtype"] = torch_dtype
    if path.exists():
        if not path.is_dir():
            raise UserError(f"model path {path} is not a directory")
        sub = next(
            (s for s in ("unet", "transformer") if (path / s / "config.json").is_file()), None
        )
        if sub is None and not (path / "config.json").is_file():
            raise UserError(
                f"model folder {path} has neither unet/config.json, "
                "transformer/config.json nor config.json"
            )
    elif "/" not in name or name.startswith((".", "/")):
        raise FileNotFoundError(
            f"no model folder {path} (and {name!r} is not a tiny model: {', '.join(TINY_MODELS)})"
        )
    else:
        sub = None  # a hub id: resolved from the local cache below
    try:
        return _load_parts(name, path, sub, kw, img_size)
    except OSError as e:  # diffusers/transformers raise OSError/EnvironmentError for missing files
        raise UserError(f"cannot load model from {name}: {str(e).splitlines()[0]}") from None


def _load_parts(name, path, sub, kw, img_size) -> Backbone:
    import diffusers

    if sub is None and path.is_dir():  # a bare model folder
        cfg = (path / "config.json").read_text()
        cls_name = next(
            (
                c
                for c in (
                    "UNet2DConditionModel",
                    "PixArtTransformer2DModel",
                    "FluxTransformer2DModel",
                )
                if c in cfg
            ),
            None,
        )
        if cls_name is None:
            raise UserError(
                f"{path}/config.json is not a UNet2DConditionModel, "
                "PixArtTransformer2DModel or FluxTransformer2DModel"
            )
        model = getattr(diffusers, cls_name).from_pretrained(path, **kw).eval()
        kind = _kind_of(model)
        sched = sd15_scheduler() if kind == "unet" and not _is_xl(model) else sdxl_scheduler()
        return Backbone(
            model, kind, sched, img_size=img_size or _default_size(model, kind), name=name
        )
    root = name if sub is None else path
    if sub is None:  # hub id: find which denoiser the pipeline has
        from huggingface_hub import hf_hub_download

        index = Path(hf_hub_download(name, "model_index.json", local_files_only=True)).read_text()
        sub = "unet" if '"unet"' in index else "transformer"
    if sub == "unet":
        model = diffusers.UNet2DConditionModel.from_pretrained(root, subfolder="unet", **kw)
    else:
        cfg_text = _read_sub_config(root, sub)
        cls = "FluxTransformer2DModel" if "Flux" in cfg_text else "PixArtTransformer2DModel"
        model = getattr(diffusers, cls).from_pretrained(root, subfolder=sub, **kw)
    model.eval()
    kind = _kind_of(model)
    parts: dict[str, Any] = {}
    if _has(root, "scheduler"):
        sched_cfg = _read_sub_config(root, "scheduler", "scheduler_config.json")
        cls_name = _class_name(sched_cfg)
        parts["scheduler"] = getattr(diffusers, cls_name).from_pretrained(
            root, subfolder="scheduler", local_files_only=kw["local_files_only"]
        )
    else:
        parts["scheduler"] = sdxl_scheduler() if _is_xl(model) else sd15_scheduler()
    if _has(root, "vae"):
        parts["vae"] = diffusers.AutoencoderKL.from_pretrained(root, subfolder="vae", **kw).eval()
    for enc, tok in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        if _has(root, enc) and _has(root, tok):
            import transformers

            enc_cls = _class_name(_read_sub_config(root, enc))
            parts[enc] = (
                getattr(transformers, enc_cls).from_pretrained(root, subfolder=enc, **kw).eval()
            )
            parts[tok] = transformers.AutoTokenizer.from_pretrained(
                root, subfolder=tok, local_files_only=kw["local_files_only"]
            )
    size = img_size or _default_size(model, kind, parts.get("vae"))
    return Backbone(model, kind, img_size=size, name=name, **parts)


def _is_xl(model) -> bool:
    return getattr(model.config, "addition_embed_type", None) == "text_time"


def _default_size(model, kind, vae=None) -> int:
    factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 8
    return int(model.config.sample_size) * factor


def _has(root, sub: str) -> bool:
    p = Path(str(root))
    if p.is_dir():
        return (p / sub).is_dir()
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(str(root), f"{sub}/config.json", local_files_only=True)
        return True
    except Exception:  # not in the cache (or not part of this pipeline)
        return False


def _read_sub_config(root, sub: str, fname: str = "config.json") -> str:
    p = Path(str(root))
    if p.is_dir():
        f = p / sub / fname
        if not f.is_file():
            raise UserError(f"model folder {p} lacks {sub}/{fname}")
        return f.read_text()
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(str(root), f"{sub}/{fname}", local_files_only=True)).read_text()


def _class_name(cfg_text: str) -> str:
    import json

    try:
        return json.loads(cfg_text)["_class_name"]
    except (json.JSONDecodeError, KeyError):
        cfg = json.loads(cfg_text)
        arch = cfg.get("architectures") or [None]
        if arch[0]:
            return arch[0]
        raise UserError("a component config names no class (_class_name / architectures)") from None
