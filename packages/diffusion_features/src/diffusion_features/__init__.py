"""diffusion_features: generic diffusion features (Meng et al., NeurIPS 2024, "Not All
Diffusion Model Activations Have Been Evaluated as Discriminative Features").

The activation catalogue of any diffusers U-Net / PixArt / Flux backbone by the official IDs,
one-step img2img extraction with hooks (:mod:`labcore.capture`, no fork of diffusers), the
three properties and the qualitative filter, the paper's selections, and the heads.
Heavy imports (diffusers, sklearn) happen when a submodule is used.
"""

from __future__ import annotations

__version__ = "0.1.0"

# imported eagerly: the function shares its name with its submodule, which would otherwise
# shadow it once any code imports ``diffusion_features.catalogue`` (torch only, no diffusers)
from diffusion_features.catalogue import catalogue

_EXPORTS = {
    "Activation": "catalogue",
    "catalogue_table": "catalogue",
    "resolve_ids": "catalogue",
    "xl_analysis_pool": "catalogue",
    "Extractor": "extract",
    "merge": "extract",
    "img2img_timestep": "extract",
    "pixel_latents": "extract",
    "default_prompt_embeds": "extract",
    "UP_CROSS": "extract",
    "Backbone": "models",
    "load_backbone": "models",
    "noise_index": "properties",
    "granularity": "properties",
    "locality_index": "properties",
    "qualitative_filter": "properties",
    "OURS_V15": "selections",
    "OURS_XL": "selections",
    "OURS_XL_T": "selections",
    "LEGACY_V15": "selections",
    "LEGACY_XL": "selections",
    "PRESETS": "selections",
    "LinearProbe": "heads",
    "MLPEnsemble": "heads",
    "nn_correspondence": "heads",
    "pck": "heads",
    "label_scarce_protocol": "heads",
    "train_conv_head": "heads",
    "synthetic_shapes": "data",
}
__all__ = ["__version__", "catalogue", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"diffusion_features.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'diffusion_features' has no attribute {name!r}")
