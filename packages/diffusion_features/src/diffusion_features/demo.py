"""The offline demo (spec T9, T11): the machinery on a tiny random-init SD1.5-topology U-Net and
the synthetic shapes scenes. **Not the paper's result**: random weights carry no learned
features; what a linear probe reads here is what survives of the input through random
convolutions and attention, and the noise that img2img adds at larger t.

Protocol (T11): images 64², latent = the image itself as 4 channels (RGB + luminance, the
``pixel_latents`` stand-in for a VAE: a random-init VAE ruins the signal, which is measured
too), t = 50 unless stated, 16 train / 16 test images, a per-pixel linear probe on 20k sampled
training pixels, test mIoU over {background, disk, square}. Checks fixed before the run:

- A1: the high-resolution activations (up-level3-repeat2-res-out, down-level0-repeat0-res-out,
  up-level3-repeat0-vit-block0-self-k) reach mIoU ≥ 0.80;
- A2: the t-trend mIoU(t=0) > mIoU(t=50) > mIoU(t=500) + 0.3 on up-level3-repeat2-res-out;
- A3: averaging 4 noise draws beats 1 on up-level3-repeat2-res-out and on self-k;
- A4 (T9): noise_index rises with t on up-level3-repeat2-res-out; locality_index of
  up-level3 self-k exceeds that of up-level1 cross-q (locality of self-attention q/k).
"""

from __future__ import annotations

import torch

from diffusion_features.catalogue import catalogue, xl_analysis_pool
from diffusion_features.data import synthetic_shapes
from diffusion_features.extract import Extractor, default_prompt_embeds, pixel_latents
from diffusion_features.heads import LinearProbe
from diffusion_features.models import load_backbone, tiny_sdxl
from diffusion_features.properties import locality_index, noise_index, qualitative_filter
from diffusion_features.selections import TABLE6_SD15, TABLES45_XL, jaccard
from labcore.cli import progress

__all__ = ["DEMO_IDS", "run_demo"]

HIGH_RES = (
    "up-level3-repeat2-res-out",
    "down-level0-repeat0-res-out",
    "up-level3-repeat0-vit-block0-self-k",
)
CROSS_16 = "up-level1-repeat1-vit-block0-cross-q"
DEMO_IDS = (*HIGH_RES, CROSS_16)


def _features(ex, z, emb, t, seed, n_ensemble, batch):
    out: dict[str, list[torch.Tensor]] = {}
    for i in range(0, z.shape[0], batch):
        f = ex.extract_latents(z[i : i + batch], emb, t=t, seed=seed + i, n_ensemble=n_ensemble)
        for k, v in f.items():
            out.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in out.items()}


def run_demo(
    n_train: int = 16,
    n_test: int = 16,
    seed: int = 0,
    n_pixels: int = 20000,
    ensemble: int = 4,
    batch: int = 8,
    with_vae: bool = True,
) -> dict:
    bb = load_backbone("tiny-sd15", seed=seed)
    counts = {
        "sd15": len(catalogue(bb.model)),
        "sd15_with_cross_kv": len(catalogue(bb.model, cross_kv=True)),
    }
    xl = tiny_sdxl(seed=seed)
    counts["sdxl"] = len(catalogue(xl))
    pool = xl_analysis_pool(xl)
    counts["sdxl_analysis_pool"] = len(pool)
    f15 = [a.id for a in qualitative_filter(catalogue(bb.model))]
    fxl = [a.id for a in qualitative_filter(pool)]
    filt = {
        "sd15": len(f15),
        "sd15_jaccard_table6": jaccard(f15, TABLE6_SD15),
        "sdxl_pool": len(fxl),
        "sdxl_jaccard_tables45": jaccard(fxl, TABLES45_XL),
    }
    del xl

    images, labels = synthetic_shapes(n_train + n_test, size=64, seed=seed)
    z = pixel_latents(images * 2 - 1, (64, 64))
    emb, _ = default_prompt_embeds(bb)
    ex = Extractor(bb, DEMO_IDS, storage_dtype="fp32")
    tr, te = slice(0, n_train), slice(n_train, None)

    def probe(feats):
        p = LinearProbe(n_pixels=n_pixels, seed=seed).fit(feats[tr], labels[tr])
        return p.miou(feats[te], labels[te], 3)

    runs = {"t=50": (50, 1), "t=0": (0, 1), "t=500": (500, 1), f"t=50 x{ensemble}": (50, ensemble)}
    miou: dict[str, dict[str, float]] = {}
    props: dict[str, dict[str, float]] = {}
    for name, (t, n) in progress(runs.items(), desc="extraction runs"):
        feats = _features(ex, z, emb, t, seed, n, batch)
        miou[name] = {}
        for k in DEMO_IDS if name == "t=50" else (HIGH_RES[0], HIGH_RES[2]):
            miou[name][k] = probe(feats[k])
        if n == 1:
            first = {k: v[n_train] for k, v in feats.items()}
            props[name] = {"noise_index_" + HIGH_RES[0]: noise_index(first[HIGH_RES[0]])}
            if name == "t=50":
                lab16 = torch.nn.functional.interpolate(
                    labels[n_train : n_train + 1, None].float(), size=16, mode="nearest"
                )[0, 0]
                props[name]["locality_self_k_64"] = locality_index(
                    first[HIGH_RES[2]], labels[n_train]
                )
                props[name]["locality_cross_q_16"] = locality_index(
                    first[CROSS_16], lab16, r=1, R=4.0
                )
        del feats
    if with_vae:
        vae_ex = Extractor(bb, [HIGH_RES[0]], storage_dtype="fp32", img_size=128)
        feats = []
        for i in range(0, images.shape[0], batch):
            f = vae_ex.extract(images[i : i + batch], emb, t=50, seed=seed + i)
            feats.append(f[HIGH_RES[0]])
        vf = torch.cat(feats)
        miou["t=50 random-init VAE"] = {HIGH_RES[0]: probe(vf)}
        # the spec's remedy: standardise the VAE latents per channel before the U-Net
        zv = torch.cat(
            [
                vae_ex.encode_images(
                    vae_ex.preprocess(images[i : i + batch]),
                    torch.Generator().manual_seed(seed + i),
                )
                for i in range(0, images.shape[0], batch)
            ]
        )
        zv = (zv - zv.mean((0, 2, 3), keepdim=True)) / zv.std((0, 2, 3), keepdim=True)
        f = _features(
            Extractor(bb, [HIGH_RES[0]], storage_dtype="fp32"), zv, emb, 50, seed, 1, batch
        )
        miou["t=50 random-init VAE, standardised latents"] = {HIGH_RES[0]: probe(f[HIGH_RES[0]])}

    m50, r = miou["t=50"], HIGH_RES[0]
    ens = miou[f"t=50 x{ensemble}"]
    checks = {
        "A1 high-res activations mIoU >= 0.80": {
            "met": all(m50[k] >= 0.80 for k in HIGH_RES),
            "values": {k: m50[k] for k in HIGH_RES},
        },
        "A2 mIoU(t=0) > mIoU(t=50) > mIoU(t=500) + 0.3": {
            "met": miou["t=0"][r] > m50[r] > miou["t=500"][r] + 0.3,
            "values": {t: miou[t][r] for t in ("t=0", "t=50", "t=500")},
        },
        f"A3 {ensemble}-draw ensemble beats 1 draw": {
            "met": all(ens[k] > m50[k] for k in (HIGH_RES[0], HIGH_RES[2])),
            "values": {k: [m50[k], ens[k]] for k in (HIGH_RES[0], HIGH_RES[2])},
        },
        "A4 noise index rises with t; self-k more local than 16² cross-q": {
            "met": (
                props["t=0"]["noise_index_" + r]
                < props["t=50"]["noise_index_" + r]
                < props["t=500"]["noise_index_" + r]
            )
            and props["t=50"]["locality_self_k_64"] > props["t=50"]["locality_cross_q_16"],
            "values": props,
        },
        "T1/T2 catalogue counts 197/229/612/279": {
            "met": (
                counts["sd15"],
                counts["sd15_with_cross_kv"],
                counts["sdxl"],
                counts["sdxl_analysis_pool"],
            )
            == (197, 229, 612, 279),
            "values": counts,
        },
        "T5 filter 32/62, Jaccard >= 0.9": {
            "met": filt["sd15"] == 32
            and filt["sdxl_pool"] == 62
            and min(filt["sd15_jaccard_table6"], filt["sdxl_jaccard_tables45"]) >= 0.9,
            "values": filt,
        },
    }
    return {
        "miou": miou,
        "properties": props,
        "catalogue_counts": counts,
        "filter": filt,
        "checks": checks,
        "chance_all_background": _chance(labels[te]),
    }


def _chance(labels) -> float:
    from labcore.metrics import ConfusionMatrix

    return ConfusionMatrix(3).update(torch.zeros_like(labels), labels).miou()
