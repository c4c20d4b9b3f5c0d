"""Capture cost on an SD1.5-topology U-Net (random init, batch 1), all measured in one run:

- time of a plain forward (no hooks) vs forwards capturing 1, 16 and all 197 activations
  (fp16 storage on the CPU), median of ``repeats`` runs each, interleaved;
- the early-stop option for a down-stage activation (``down-level1-repeat0-res-out``): time of
  the stopped forward over the plain full forward;
- peak live tensor bytes of each variant (``labcore.memory.peak_memory(method="tensors")``:
  CUDA-allocator-like accounting on any device), and the bytes of the stored features.

Full size = the SD1.5 config (320/640/1280/1280 widths, 768-d text, 64² latent).
``--quick`` uses widths (32, 64, 128, 128), a 16² latent and 3 repeats (CI budget);
its ratios are reported the same way and labelled quick.
"""

from __future__ import annotations

import statistics
import time

import torch

from diffusion_features.catalogue import catalogue
from diffusion_features.extract import Extractor, default_prompt_embeds
from diffusion_features.models import Backbone, sd15_scheduler
from labcore.memory import peak_memory

__all__ = ["EARLY_ID", "run_bench"]

EARLY_ID = "down-level1-repeat0-res-out"
# 16 activations spread over the network (the "≤ 16" case of the claim)
SIXTEEN = (
    "unet-after-conv-in",
    "down-level0-repeat0-res-out",
    "down-level0-repeat1-vit-out",
    "down-level1-repeat0-res-out",
    "down-level2-downsampler-out",
    "down-level3-repeat1-res-out",
    "mid-repeat0-vit-block0-out",
    "up-level0-repeat2-res-out",
    "up-level0-upsampler-out",
    "up-level1-repeat1-vit-block0-cross-q",
    "up-level1-repeat2-res-out",
    "up-level2-repeat1-vit-block0-cross-q",
    "up-level2-upsampler-out",
    "up-level3-repeat0-vit-block0-self-k",
    "up-level3-repeat2-vit-out",
    "unet-out",
)


def _unet(quick: bool, seed: int):
    from diffusers import UNet2DConditionModel

    from diffusion_features.models import full_sd15

    if not quick:
        return full_sd15(seed)
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 128, 128),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        layers_per_block=2,
        cross_attention_dim=128,
        attention_head_dim=8,
        norm_num_groups=16,
    ).eval()


def run_bench(
    quick: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    repeats: int | None = None,
    precision: str = "fp32",
) -> dict:
    device = torch.device(device)
    unet = _unet(quick, seed).to(device)
    side = 16 if quick else 64
    repeats = repeats or (3 if quick else 5)
    bb = Backbone(unet, "unet", sd15_scheduler(), img_size=side * 8)
    emb, _ = default_prompt_embeds(bb)
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(1, 4, side, side, generator=g).to(device)
    all_ids = [a.id for a in catalogue(unet)]
    variants = {
        "plain": None,
        "capture_1": Extractor(
            bb,
            ["up-level1-repeat1-vit-block0-cross-q"],
            stop_early=False,
            device=device,
            precision=precision,
        ),
        "capture_16": Extractor(bb, SIXTEEN, stop_early=False, device=device, precision=precision),
        f"capture_all_{len(all_ids)}": Extractor(
            bb, all_ids, stop_early=False, device=device, precision=precision
        ),
        "early_stop": Extractor(
            bb, [EARLY_ID], stop_early=True, device=device, precision=precision
        ),
    }
    from labcore.dist import autocast

    ref = variants["capture_1"]
    text = emb.to(device)

    def plain():  # the same noising steps as the extractor, then a hook-free forward
        zt, timestep = ref._noise(z0, 50, torch.Generator(device=device).manual_seed(seed))
        with torch.no_grad(), autocast(precision, device):
            return unet(zt, timestep, encoder_hidden_states=text).sample

    def runner(ex):
        def call():
            return ex.extract_latents(z0, emb, t=50, seed=seed)

        return call

    calls = {k: plain if v is None else runner(v) for k, v in variants.items()}
    peaks, stored = {}, {}
    for k, fn in calls.items():  # warm-up (allocator, lazy init) that also measures memory
        box = {}
        peaks[k] = peak_memory(
            lambda fn=fn, box=box: box.setdefault("out", fn()), device=device, method="tensors"
        ).peak_bytes
        if isinstance(box["out"], dict):
            stored[k] = sum(t.numel() * t.element_size() for t in box["out"].values())
        del box
    times = {k: [] for k in calls}
    for _ in range(repeats):
        for k, fn in calls.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
            del out
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["plain"]
    return {
        "config": {
            "quick": quick,
            "latent": side,
            "repeats": repeats,
            "ids_total": len(all_ids),
            "widths": list(unet.config.block_out_channels),
            "device": str(device),
            "precision": precision,
            "storage": "fp16 on cpu",
        },
        "median_seconds": med,
        "all_seconds": times,
        "overhead_vs_plain": {k: med[k] / base - 1 for k in med if k != "plain"},
        "early_stop_vs_plain": med["early_stop"] / base,
        "peak_tensor_bytes": peaks,
        "stored_feature_bytes": stored,
    }
