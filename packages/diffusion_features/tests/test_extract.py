import json

import pytest
import torch

from diffusion_features.catalogue import catalogue
from diffusion_features.extract import (
    UP_CROSS,
    Extractor,
    default_prompt_embeds,
    img2img_timestep,
    merge,
)
from diffusion_features.models import (
    load_backbone,
    sd15_scheduler,
    sdxl_scheduler,
    tiny_vae,
)
from labcore.cli import UserError

from .conftest import hook_count

T4 = {
    "up-level1-repeat1-vit-block0-cross-q": (1, 64, 16, 16),
    "up-level3-repeat0-vit-block0-self-k": (1, 32, 64, 64),
    "up-level2-upsampler-out": (1, 32, 64, 64),
}


def test_t6_scheduler_exact_timesteps():
    assert int(img2img_timestep(sd15_scheduler(), 50)[0]) == 51  # PNDM, 1001 entries
    assert len(sd15_scheduler().set_timesteps(1000) or []) == 0
    assert int(img2img_timestep(sdxl_scheduler("leading"), 50)[0]) == 50
    assert int(img2img_timestep(sdxl_scheduler("linspace"), 50)[0]) == 49
    assert int(img2img_timestep(sd15_scheduler(), 500)[0]) == 501


def test_t4_shapes_and_cross_kv_excluded(sd15):
    emb, _ = default_prompt_embeds(sd15)
    ex = Extractor(sd15, [*T4, "up-level1-repeat0-vit-block0-cross-k"])
    feats = ex.extract_latents(torch.randn(1, 4, 64, 64), emb)
    assert {k: tuple(v.shape) for k, v in feats.items() if k in T4} == T4
    assert tuple(feats["up-level1-repeat0-vit-block0-cross-k"].shape) == (1, 77, 64)
    assert all(v.dtype == torch.float16 for v in feats.values())
    assert "up-level1-repeat0-vit-block0-cross-k" not in {a.id for a in catalogue(sd15.model)}


def _manual_noisy(sched, z0, t, seed):
    timestep, _ = img2img_timestep(sched, t)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(z0.shape, generator=g)
    return sched.scale_model_input(sched.add_noise(z0, noise, timestep), timestep), timestep


def test_recipe_equals_manual_forward(sd15):
    """unet-out and a to_k output equal a hand-written img2img step (PNDM, t=50 -> 51)."""
    emb, _ = default_prompt_embeds(sd15)
    z0 = torch.randn(2, 4, 16, 24)  # non-square latent: the real grid, not sqrt(N)
    ids = ["unet-out", "up-level3-repeat0-vit-block0-self-k", "unet-in"]
    feats = Extractor(sd15, ids, storage_dtype="fp32").extract_latents(z0, emb, t=50, seed=3)
    zt, timestep = _manual_noisy(sd15_scheduler(), z0, 50, 3)
    store = {}
    k_mod = sd15.model.up_blocks[3].attentions[0].transformer_blocks[0].attn1.to_k
    h = k_mod.register_forward_hook(lambda m, a, o: store.setdefault("k", o))
    try:
        with torch.no_grad():
            out = sd15.model(zt, timestep.expand(2), encoder_hidden_states=emb.expand(2, -1, -1))
    finally:
        h.remove()
    assert torch.allclose(feats["unet-out"], out.sample, atol=1e-5)
    assert torch.allclose(feats["unet-in"], zt, atol=1e-6)
    k = store["k"].transpose(1, 2).reshape(2, 32, 16, 24)
    assert torch.allclose(feats["up-level3-repeat0-vit-block0-self-k"], k, atol=1e-5)


def test_euler_scale_model_input_and_sdxl_conditions(sdxl):
    emb, pooled = default_prompt_embeds(sdxl)
    z0 = torch.randn(1, 4, 16, 16)
    ex = Extractor(sdxl, ["unet-in"], storage_dtype="fp32")
    with pytest.raises(UserError, match="pooled"):
        ex.extract_latents(z0, emb)
    got = ex.extract_latents(z0, emb, pooled_prompt_embeds=pooled, seed=1)["unet-in"]
    sched = sdxl_scheduler()
    zt, timestep = _manual_noisy(sched, z0, 50, 1)
    assert int(timestep) == 50 and torch.allclose(got, zt, atol=1e-6)
    sigma = float(sched.sigmas[sched.begin_index])
    noisy = zt * (sigma**2 + 1) ** 0.5  # scale_model_input divided by sqrt(sigma^2 + 1)
    assert sigma > 0.1 and not torch.allclose(noisy, zt)


def test_maps_processor_and_up_cross(sd15):
    emb, _ = default_prompt_embeds(sd15)
    procs = {k: type(v) for k, v in sd15.model.attn_processors.items()}
    ids = [
        "up-level1-repeat0-vit-block0-cross-map",
        "up-level2-repeat0-vit-block0-self-map",
        UP_CROSS,
    ]
    feats = Extractor(sd15, ids, storage_dtype="fp32").extract_latents(
        torch.randn(1, 4, 32, 32), emb
    )
    cm = feats["up-level1-repeat0-vit-block0-cross-map"]
    assert tuple(cm.shape) == (1, 77, 8, 8)
    assert torch.allclose(cm.sum(1), torch.ones(1, 8, 8), atol=1e-4)  # softmax over tokens
    sm = feats["up-level2-repeat0-vit-block0-self-map"]
    assert tuple(sm.shape) == (1, 256, 16, 16)
    assert tuple(feats[UP_CROSS].shape) == (1, 154, 32, 32)  # 2 grid sizes x 77 tokens
    assert {k: type(v) for k, v in sd15.model.attn_processors.items()} == procs  # restored


def test_hooks_removed_and_early_stop(sd15):
    emb, _ = default_prompt_embeds(sd15)
    before = hook_count(sd15.model)
    ran = []
    h = sd15.model.up_blocks[0].register_forward_hook(lambda *a: ran.append("up0"))
    try:
        ex = Extractor(sd15, ["down-level1-repeat0-res-out"], stop_early=True)
        f = ex.extract_latents(torch.randn(1, 4, 16, 16), emb)
        assert ran == [] and tuple(f["down-level1-repeat0-res-out"].shape) == (1, 32, 8, 8)
        Extractor(sd15, ["down-level1-repeat0-res-out"], stop_early=False).extract_latents(
            torch.randn(1, 4, 16, 16), emb
        )
        assert ran == ["up0"]
    finally:
        h.remove()
    assert hook_count(sd15.model) == before
    with pytest.raises(RuntimeError):  # a failing forward (wrong channels) leaves no hook
        Extractor(sd15, ["unet-out"]).extract_latents(torch.randn(1, 3, 16, 16), emb)
    assert hook_count(sd15.model) == before


def test_noise_ensemble_is_the_mean_of_draws(sd15):
    emb, _ = default_prompt_embeds(sd15)
    z0 = torch.randn(1, 4, 16, 16)
    ex = Extractor(sd15, ["unet-in"], storage_dtype="fp32")
    avg = ex.extract_latents(z0, emb, seed=5, n_ensemble=2)["unet-in"]
    sched = sd15_scheduler()
    timestep, _ = img2img_timestep(sched, 50)
    g = torch.Generator().manual_seed(5)
    draws = [sched.add_noise(z0, torch.randn(z0.shape, generator=g), timestep) for _ in range(2)]
    assert torch.allclose(avg, (draws[0] + draws[1]) / 2, atol=1e-6)
    one = ex.extract_latents(z0, emb, seed=5)["unet-in"]
    assert torch.allclose(one, draws[0], atol=1e-6)


def test_images_through_vae_and_precision(sd15):
    emb, _ = default_prompt_embeds(sd15)
    ex = Extractor(sd15, ["up-level3-repeat2-res-out"], img_size=(32, 48))
    f = ex.extract(torch.rand(2, 3, 20, 30), emb)["up-level3-repeat2-res-out"]
    assert tuple(f.shape) == (2, 32, 16, 24)  # VAE factor 2
    bf = Extractor(sd15, ["up-level3-repeat2-res-out"], precision="bf16", img_size=32)
    assert torch.isfinite(
        bf.extract(torch.rand(1, 3, 32, 32), emb)["up-level3-repeat2-res-out"]
    ).all()
    with pytest.raises(UserError, match="fp16"):
        Extractor(sd15, ["unet-out"], precision="fp16")


@pytest.mark.parametrize("name", ["tiny-pixart", "tiny-flux"])
def test_dit_token_grids(name):
    bb = load_backbone(name)
    emb, pooled = default_prompt_embeds(bb, tokens=7)
    ids = [a.id for a in catalogue(bb.model) if "map" not in a.id][:6]
    if name == "tiny-flux":
        ids += ["vit-single-block0-q", "vit-single-block1-out"]
    f = Extractor(bb, ids, storage_dtype="fp32").extract_latents(
        torch.randn(1, 4, 16, 24), emb, pooled_prompt_embeds=pooled
    )
    for k in ids:
        assert tuple(f[k].shape[-2:]) == (8, 12), k  # (latent / 2) grid, non-square


def test_merge():
    a, b = torch.ones(1, 2, 4, 4), torch.zeros(1, 3, 8, 8)
    m = merge({"a": a, "b": b})
    assert tuple(m.shape) == (1, 5, 8, 8) and m[:, :2].eq(1).all()
    assert tuple(merge({"a": a, "b": b}, 16, "bilinear").shape) == (1, 5, 16, 16)
    with pytest.raises(UserError):
        merge({"a": a}, mode="cubic")


def test_local_pipeline_folder_roundtrip(tmp_path, sd15):
    """save_pretrained a tiny UNet + VAE + scheduler as a pipeline folder, load it back."""
    root = tmp_path / "pipe"
    sd15.model.save_pretrained(root / "unet")
    tiny_vae().save_pretrained(root / "vae")
    sd15_scheduler().save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    bb = load_backbone(root)
    assert type(bb.scheduler).__name__ == "PNDMScheduler" and bb.vae is not None
    assert bb.img_size == 64 * 2
    emb, _ = default_prompt_embeds(sd15)
    z0 = torch.randn(1, 4, 16, 16)
    a = Extractor(bb, ["unet-out"]).extract_latents(z0, emb)["unet-out"]
    b = Extractor(sd15, ["unet-out"]).extract_latents(z0, emb)["unet-out"]
    assert torch.allclose(a.float(), b.float(), atol=2e-3)
    (root / "unet" / "config.json").unlink()
    with pytest.raises(UserError, match=r"config\.json"):
        load_backbone(root)
    with pytest.raises(FileNotFoundError):
        load_backbone(tmp_path / "nowhere")


def test_per_image_seeds_do_not_depend_on_batching(sd15):
    emb, _ = default_prompt_embeds(sd15)
    ex = Extractor(sd15, ["up-level3-repeat2-res-out"], storage_dtype="fp32", img_size=32)
    x = torch.rand(2, 3, 32, 32)
    both = ex.extract(x, emb, seed=[7, 8])["up-level3-repeat2-res-out"]
    one = ex.extract(x[1:], emb, seed=[8])["up-level3-repeat2-res-out"]
    assert torch.allclose(both[1:], one, atol=1e-5)
    assert not torch.allclose(both[:1], one, atol=1e-3)
