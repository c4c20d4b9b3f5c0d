"""One-step img2img feature extraction (the official recipe), with hooks, never a diffusers fork.

For images ``x`` and a strength ``t/1000`` (``t=50`` by default):

1. resize to ``img_size`` (square by default, aspect ratio not kept; a (H, W) pair keeps any
   shape) and map to [-1, 1] with the pipeline's ``VaeImageProcessor``;
2. ``z0 = vae.encode(x).latent_dist.sample() · scaling_factor`` — a posterior *sample*, as the
   img2img pipeline's ``prepare_latents``;
3. ``scheduler.set_timesteps(1000)``; the img2img rule keeps the last ``int(1000 · t/1000)``
   timesteps and noises once at the first kept one: ``z_t = add_noise(z0, ε, τ)`` with one
   Gaussian draw ε. τ is whatever the scheduler says (PNDM SD1.5 config: 51; Euler "leading":
   50; Euler "linspace": 49);
4. ``scheduler.scale_model_input(z_t, τ)`` (no-op for PNDM/DDIM, ÷√(σ²+1) for Euler);
5. one forward with the conditional prompt embedding only (no CFG); SDXL also gets the pooled
   embedding and ``time_ids = (H, W, 0, 0, H, W)``;
6. activations from :class:`labcore.capture.ActivationCapture` (forward hooks / pre-hooks by
   module path) and attention maps from :class:`diffusion_features.attention.MapRecorder`;
   token tensors (B, N, C) are laid out on the *real* grid (B, C, h, w) (non-square latents
   work), maps become (B, Nk, h, w); optional adaptive average pooling to ``feature_size``;
   stored as ``storage_dtype`` (fp16 as the repo) on ``store_device``.

The forward ends as soon as the last requested activation is stored (``stop_early``), so early
activations cost only the network before them. ``n_ensemble > 1`` averages the features of n
independent noise draws (DIFT-style; **off by default**, the paper's recipe uses one draw).

:func:`merge` is the official aggregation: resize every activation to one size (nearest for the
CLI's ``--aggregate_output``, bilinear for the correspondence head) and concatenate channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from diffusion_features.attention import record_maps, up_cross_maps
from diffusion_features.catalogue import Activation, grid_size, resolve_ids
from diffusion_features.models import Backbone
from labcore.capture import ActivationCapture, resolve_dtype
from labcore.cli import UserError

__all__ = [
    "UP_CROSS",
    "Extractor",
    "default_prompt_embeds",
    "img2img_timestep",
    "merge",
    "pixel_latents",
]

UP_CROSS = "up-cross-maps"  # the official --attention up_cross feature (154 ch for SD1.5)


def img2img_timestep(
    scheduler, t: int, num_train_timesteps: int = 1000
) -> tuple[torch.Tensor, int]:
    """The timestep the img2img pipeline noises at for strength ``t/1000``, and its index.

    Mirrors ``StableDiffusionImg2ImgPipeline.get_timesteps`` with ``num_inference_steps`` equal
    to the training steps, and sets the scheduler's begin index as the pipeline does.
    """
    if not 0 <= t <= num_train_timesteps:
        raise UserError(f"t must lie in [0, {num_train_timesteps}], got {t}")
    steps = num_train_timesteps
    scheduler.set_timesteps(steps)
    init = min(int(steps * (t / num_train_timesteps)), steps)
    start = max(steps - init, 0)
    order = getattr(scheduler, "order", 1)
    timesteps = scheduler.timesteps[start * order :]
    if len(timesteps) == 0:  # t = 0: no noise step kept; use the last (least noisy) timestep
        timesteps = scheduler.timesteps[-1:]
        start = len(scheduler.timesteps) - 1
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start * order)
    return timesteps[:1], start * order


def pixel_latents(images: torch.Tensor, latent_hw: tuple[int, int], channels: int = 4):
    """A stand-in "VAE" for random-init demos (spec T11): the image area-pooled to the latent
    size, RGB plus luminance as 4 channels, in [-1, 1]. Not part of the method."""
    x = F.interpolate(images, size=latent_hw, mode="area")
    lum = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).clamp(-1, 1)
    parts = [x, lum][: max(1, channels // 3 + 1)]
    z = torch.cat(parts, dim=1)[:, :channels]
    if z.shape[1] < channels:
        z = torch.cat([z, z.new_zeros(z.shape[0], channels - z.shape[1], *latent_hw)], dim=1)
    return z


@dataclass
class _Plan:
    acts: list[Activation]
    maps: list[Activation]
    up_cross: list[Activation]
    want_up_cross: bool


class Extractor:
    """Extract activations of a diffusers backbone by their catalogue IDs.

    Args:
        backbone: a :class:`~diffusion_features.models.Backbone` (``load_backbone(...)``) or a
            bare denoiser (``UNet2DConditionModel`` / ``PixArtTransformer2DModel`` /
            ``FluxTransformer2DModel``; then give ``scheduler`` and optionally ``vae``).
        ids: catalogue IDs (and/or ``"up-cross-maps"``).
        storage_dtype: dtype of the returned features (``"fp16"`` as the repo, or fp32/bf16).
        store_device: where features go (default cpu, freeing accelerator memory).
        feature_size: optional adaptive average pooling of every activation to this side.
        stop_early: end each forward after the last requested activation.
        precision: compute dtype for the forward (``fp32``/``bf16``/``fp16``) via autocast.
    """

    def __init__(
        self,
        backbone,
        ids: Sequence[str],
        *,
        scheduler=None,
        vae=None,
        img_size: int | tuple[int, int] | None = None,
        storage_dtype="fp16",
        store_device="cpu",
        feature_size: int | None = None,
        stop_early: bool = True,
        device: str | torch.device | None = None,
        precision: str = "fp32",
    ) -> None:
        if not isinstance(backbone, Backbone):
            from diffusion_features.models import _kind_of, sd15_scheduler

            backbone = Backbone(
                backbone,
                _kind_of(backbone),
                scheduler or sd15_scheduler(),
                vae=vae,
                img_size=img_size or 512,
            )
        self.bb = backbone
        if scheduler is not None:
            self.bb.scheduler = scheduler
        if vae is not None:
            self.bb.vae = vae
        size = img_size or self.bb.img_size
        self.img_hw = (size, size) if isinstance(size, int) else tuple(size)
        self.device = torch.device(device) if device else next(self.bb.model.parameters()).device
        self.storage_dtype = resolve_dtype(storage_dtype)
        self.store_device = store_device
        self.feature_size = feature_size
        self.stop_early = stop_early
        from labcore.dist import check_precision

        check_precision(precision, self.device)
        self.precision = precision
        ids = list(dict.fromkeys(ids))
        self.ids = ids
        plain = [i for i in ids if i != UP_CROSS]
        acts = resolve_ids(self.bb.model, plain) if plain else []
        up_cross = []
        if UP_CROSS in ids:
            if self.bb.kind != "unet":
                raise UserError(f"{UP_CROSS} is defined for U-Nets only")
            from diffusion_features.catalogue import catalogue

            up_cross = [
                a for a in catalogue(self.bb.model) if a.kind == "cross-map" and a.stage == "up"
            ]
        self.plan = _Plan(
            [a for a in acts if a.hook != "map"],
            [a for a in acts if a.hook == "map"],
            up_cross,
            UP_CROSS in ids,
        )
        self._text_len = 0
        self._latent_hw = (0, 0)

    # -- inputs -----------------------------------------------------------------------------
    @property
    def vae_factor(self) -> int:
        vae = self.bb.vae
        return 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 8

    def preprocess(self, images) -> torch.Tensor:
        """PIL images (or a (B, 3, H, W) tensor in [0, 1]) → (B, 3, H, W) in [-1, 1] at
        ``img_size``, with diffusers' ``VaeImageProcessor`` (no crop)."""
        from diffusers.image_processor import VaeImageProcessor

        h, w = self.img_hw
        if isinstance(images, torch.Tensor):
            x = images if images.ndim == 4 else images[None]
            x = F.interpolate(x.float(), size=(h, w), mode="bilinear", align_corners=False)
            return (x * 2 - 1).clamp(-1, 1)
        proc = VaeImageProcessor(vae_scale_factor=self.vae_factor)
        imgs = [im.convert("RGB") for im in (images if isinstance(images, list) else [images])]
        return proc.preprocess(imgs, height=h, width=w)

    def encode_images(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """VAE posterior sample × scaling factor (img2img ``prepare_latents``)."""
        vae = self.bb.vae
        if vae is None:
            raise UserError("this backbone has no VAE: pass latents to extract_latents()")
        x = x.to(self.device, dtype=next(vae.parameters()).dtype)
        with torch.no_grad():
            dist = vae.encode(x).latent_dist
            z = dist.sample(generator)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (z - shift) * vae.config.scaling_factor

    def encode_prompt(self, prompt: str, batch: int = 1):
        """The conditional prompt embedding (and the pooled one for SDXL); no negative prompt.

        Prompts longer than the tokenizer's window are truncated (the repo chunks prompts longer
        than 70 words; not reproduced here)."""
        bb = self.bb
        if bb.text_encoder is None or bb.tokenizer is None:
            raise UserError("this backbone has no text encoder/tokenizer: pass prompt_embeds")

        def enc(tok, te, hidden_minus_2):
            ids = tok(
                prompt,
                padding="max_length",
                max_length=tok.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            with torch.no_grad():
                out = te(ids, output_hidden_states=True)
            h = out.hidden_states[-2] if hidden_minus_2 else out[0]
            return h, out[0]

        if bb.is_sdxl:
            e1, _ = enc(bb.tokenizer, bb.text_encoder, True)
            e2, pooled = enc(bb.tokenizer_2, bb.text_encoder_2, True)
            return torch.cat([e1, e2], -1).repeat(batch, 1, 1), pooled.repeat(batch, 1)
        e, _ = enc(bb.tokenizer, bb.text_encoder, False)
        return e.repeat(batch, 1, 1), None

    # -- the forward --------------------------------------------------------------------------
    def _transform(self, key: str, t: torch.Tensor) -> torch.Tensor:
        a = self._by_id.get(key)
        if a is None:  # a map marker
            return t
        if a.stream == "joint":  # Flux single-stream blocks: [text, image] tokens
            t = t[:, self._text_len :]
        if a.tokens and t.ndim == 3 and not a.text_only:
            h, w = (grid_size(n, a.scale) for n in self._latent_hw)
            if t.shape[1] != h * w:
                raise RuntimeError(f"{key}: {t.shape[1]} tokens do not fit the grid {h}×{w}")
            t = t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)
        if self.feature_size and t.ndim == 4:
            t = F.adaptive_avg_pool2d(t.float(), self.feature_size).to(t.dtype)
        return t

    def _select(self, key: str, out):
        from labcore.capture import unwrap_tensor

        if key.startswith("__map__"):
            return torch.zeros(())  # a marker: the attention module has run
        a = self._by_id[key]
        if a.stream == "second" and isinstance(out, tuple):
            return out[1]
        return unwrap_tensor(out)

    def _forward_kwargs(self, model_input, timestep, prompt_embeds, pooled):
        bb, b = self.bb, model_input.shape[0]
        if bb.kind == "unet":
            kw = {"encoder_hidden_states": prompt_embeds}
            if bb.is_sdxl:
                if pooled is None:
                    raise UserError("SDXL needs pooled_prompt_embeds (or a text_encoder_2)")
                h, w = self.img_hw
                ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=prompt_embeds.dtype)
                kw["added_cond_kwargs"] = {
                    "text_embeds": pooled,
                    "time_ids": ids.repeat(b, 1).to(self.device),
                }
            return (model_input, timestep.expand(b)), kw
        if bb.kind == "pixart":
            return (model_input,), {
                "encoder_hidden_states": prompt_embeds,
                "timestep": timestep.expand(b),
                "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
            }
        # flux: 2×2-packed latents, image/text position ids, pooled text, timestep in [0, 1]
        n, c, h, w = model_input.shape
        packed = model_input.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        packed = packed.reshape(n, (h // 2) * (w // 2), c * 4)
        img_ids = torch.zeros(h // 2, w // 2, 3)
        img_ids[..., 1] += torch.arange(h // 2)[:, None]
        img_ids[..., 2] += torch.arange(w // 2)[None, :]
        txt_ids = torch.zeros(prompt_embeds.shape[1], 3)
        if pooled is None:
            pooled = prompt_embeds.new_zeros(n, bb.model.config.pooled_projection_dim)
        return (packed,), {
            "encoder_hidden_states": prompt_embeds,
            "pooled_projections": pooled,
            "timestep": (timestep.float() / 1000).expand(n).to(self.device),
            "img_ids": img_ids.reshape(-1, 3).to(self.device),
            "txt_ids": txt_ids.to(self.device),
        }

    def _noise(self, z0, t, generator):
        sched = self.bb.scheduler
        timestep, _ = img2img_timestep(sched, t)
        from diffusers.utils.torch_utils import randn_tensor

        noise = randn_tensor(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
        if t == 0:
            zt = z0
        elif hasattr(sched, "add_noise"):
            zt = sched.add_noise(z0, noise, timestep)
        else:  # flow matching (Flux): x_t = (1 - σ) x0 + σ ε
            zt = sched.scale_noise(z0, timestep, noise)
        if hasattr(sched, "scale_model_input"):
            zt = sched.scale_model_input(zt, timestep)
        return zt, timestep.to(self.device)

    def _one_forward(self, zt, timestep, prompt_embeds, pooled) -> dict[str, torch.Tensor]:
        plan, model = self.plan, self.bb.model
        self._by_id = {a.id: a for a in plan.acts}
        maps_sink: dict[str, torch.Tensor] = {}
        map_modules = {a.id: a.module for a in plan.maps}
        map_modules.update({a.id: a.module for a in plan.up_cross})
        outputs = {a.id: a.module for a in plan.acts if a.hook == "output"}
        inputs = {a.id: a.module for a in plan.acts if a.hook == "input"}
        outputs.update({f"__map__{k}": p for k, p in map_modules.items()})
        args, kw = self._forward_kwargs(zt, timestep, prompt_embeds, pooled)
        from labcore.dist import autocast

        with (
            record_maps(model, map_modules, maps_sink, dtype=torch.float32),
            ActivationCapture(
                model,
                outputs=outputs,
                inputs=inputs,
                dtype=None,
                device=self.store_device,
                stop_early=self.stop_early,
                transform=self._transform,
                select=self._select,
            ) as cap,
            torch.no_grad(),
            autocast(self.precision, self.device),
        ):
            cap.run(model, *args, **kw)
        feats = {
            k: v.float()
            for k, v in {**cap.outputs, **cap.inputs}.items()
            if not k.startswith("__map__")
        }
        missing = [k for k in cap.missing() if not k.startswith("__map__")]
        if missing:
            raise RuntimeError(f"activations not produced by the forward: {missing}")
        for a in plan.maps:
            feats[a.id] = self._map_grid(a, maps_sink[a.id])
        if plan.want_up_cross:
            sides = {
                a.id: tuple(grid_size(n, a.scale) for n in self._latent_hw) for a in plan.up_cross
            }
            hw = self._latent_hw
            lo = grid_size(hw[0], 4)  # img/32 = latent/4
            hi = grid_size(hw[0], 2)  # img/16 = latent/2
            ucm = {a.id: maps_sink[a.id].to(self.store_device) for a in plan.up_cross}
            feats[UP_CROSS] = up_cross_maps(ucm, sides, hw, lo, hi)
        return feats

    def _map_grid(self, a: Activation, m: torch.Tensor) -> torch.Tensor:
        h, w = (grid_size(n, a.scale) for n in self._latent_hw)
        m = m.to(self.store_device)
        if self.bb.kind == "flux":
            return m
        g = m.transpose(1, 2).reshape(m.shape[0], m.shape[2], h, w)
        if self.feature_size:
            g = F.adaptive_avg_pool2d(g, self.feature_size)
        return g

    def extract_latents(
        self,
        z0: torch.Tensor,
        prompt_embeds: torch.Tensor,
        *,
        t: int = 50,
        seed: int | Sequence[int] | None = 0,
        n_ensemble: int = 1,
        pooled_prompt_embeds: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Steps 3–6 from clean latents ``z0`` (B, C, h, w); returns ``{id: (B, C, h', w')}``.

        ``seed``: an int (one generator for the batch), a list of per-image seeds, or None."""
        if n_ensemble < 1:
            raise UserError(f"n_ensemble must be >= 1, got {n_ensemble}")
        z0 = z0.to(self.device)
        self._latent_hw = tuple(z0.shape[-2:])
        self._text_len = prompt_embeds.shape[1]
        prompt_embeds = prompt_embeds.to(self.device)
        if prompt_embeds.shape[0] == 1 and z0.shape[0] > 1:
            prompt_embeds = prompt_embeds.expand(z0.shape[0], -1, -1)
        if pooled_prompt_embeds is not None:
            pooled_prompt_embeds = pooled_prompt_embeds.to(self.device)
            if pooled_prompt_embeds.shape[0] == 1 and z0.shape[0] > 1:
                pooled_prompt_embeds = pooled_prompt_embeds.expand(z0.shape[0], -1)
        gen = self._generator(seed)
        total: dict[str, torch.Tensor] = {}
        for _ in range(n_ensemble):
            zt, timestep = self._noise(z0, t, gen)
            feats = self._one_forward(zt, timestep, prompt_embeds, pooled_prompt_embeds)
            for k, v in feats.items():
                total[k] = total[k] + v if k in total else v
        return {k: (v / n_ensemble).to(self.storage_dtype) for k, v in total.items()}

    def _generator(self, seed):
        """One generator, or one per image when ``seed`` is a sequence (per-image noise does
        not depend on how images are batched or sharded over ranks)."""
        if seed is None:
            return None
        if isinstance(seed, (list, tuple)):
            return [torch.Generator(device=self.device).manual_seed(int(s)) for s in seed]
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def extract(
        self,
        images,
        prompt_embeds: torch.Tensor | None = None,
        *,
        prompt: str | None = None,
        t: int = 50,
        seed: int | Sequence[int] | None = 0,
        n_ensemble: int = 1,
        pooled_prompt_embeds: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The whole recipe from images (PIL list or (B, 3, H, W) in [0, 1]); the VAE sample
        and the noise draw come from ``seed`` (an int, or one seed per image)."""
        x = self.preprocess(images)
        if prompt_embeds is None:
            if prompt is None:
                raise UserError("give prompt_embeds or a prompt")
            prompt_embeds, pooled_prompt_embeds = self.encode_prompt(prompt, x.shape[0])
        gen = self._generator(seed)
        z0 = self.encode_images(x, gen)
        model_dtype = next(self.bb.model.parameters()).dtype
        return self.extract_latents(
            z0.to(model_dtype),
            prompt_embeds.to(model_dtype),
            t=t,
            seed=_next_seed(seed),
            n_ensemble=n_ensemble,
            pooled_prompt_embeds=pooled_prompt_embeds,
        )


def _next_seed(seed):
    if seed is None:
        return None
    if isinstance(seed, (list, tuple)):
        return [s + 1_000_003 for s in seed]
    return seed + 1


def merge(
    features: dict[str, torch.Tensor],
    size: int | tuple[int, int] | None = None,
    mode: str = "nearest",
    ids: Sequence[str] | None = None,
) -> torch.Tensor:
    """Resize every (B, C, h, w) activation to ``size`` (default: the largest) and concatenate
    channels in ``ids`` order (default: dict order). ``mode``: ``nearest`` (the CLI's
    ``--aggregate_output``) or ``bilinear`` (the correspondence head, at 128²)."""
    if mode not in ("nearest", "bilinear"):
        raise UserError(f"merge mode must be nearest or bilinear, got {mode!r}")
    keys = list(ids) if ids is not None else list(features)
    maps = [features[k] for k in keys]
    bad = [k for k, v in zip(keys, maps) if v.ndim != 4]
    if bad:
        raise UserError(f"cannot merge non-spatial activations: {', '.join(bad)}")
    if size is None:
        size = max((tuple(v.shape[-2:]) for v in maps), key=lambda s: s[0] * s[1])
    size = (size, size) if isinstance(size, int) else tuple(size)
    kw = {"align_corners": False} if mode == "bilinear" else {}
    out = [
        v
        if tuple(v.shape[-2:]) == size
        else F.interpolate(v.float(), size=size, mode=mode, **kw).to(v.dtype)
        for v in maps
    ]
    return torch.cat(out, dim=1)


def default_prompt_embeds(backbone: Backbone, tokens: int = 77, seed: int = 1234):
    """Seeded random prompt embeddings (and pooled ones) for tiny random-init backbones that
    have no text encoder: a fixed stand-in for "the fixed prompt of the dataset"."""
    g = torch.Generator().manual_seed(seed)
    cfg = backbone.model.config
    if backbone.kind == "unet":
        dim = cfg.cross_attention_dim
    elif backbone.kind == "pixart":
        dim = cfg.caption_channels
    else:
        dim = cfg.joint_attention_dim
    emb = torch.randn(1, tokens, dim, generator=g)
    pooled = None
    if backbone.is_sdxl:
        pooled = torch.randn(
            1,
            cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim,
            generator=g,
        )
    elif backbone.kind == "flux":
        pooled = torch.randn(1, cfg.pooled_projection_dim, generator=g)
    return emb, pooled


def as_numpy(features: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.cpu().numpy() for k, v in features.items()}
