"""The activation catalogue: every candidate activation of a diffusers backbone, by the
official ID scheme, with the module (and hook) that produces it and its metadata.

U-Net IDs (``UNet2DConditionModel``; SD1.x/2.x/SDXL/PG v2 topologies)::

    unet-in | unet-after-conv-in | unet-out
    {down,up}-level{L}-repeat{R}-res-{increment,out}     mid-repeat{R}-res-{increment,out}
    {down,up}-level{L}-repeat{R}-vit-out                  mid-repeat{R}-vit-out
    <stage>-repeat{R}-vit-block{I}-{self-q,self-k,self-v,cross-q,cross-k,cross-v,
                                    ffn-inner,out,self-map,cross-map}
    down-level{L}-downsampler-out | up-level{L}-upsampler-out

with the tensor each one names:

- ``res-increment``: ``resnets[R].conv2`` output, the residual branch before the shortcut add;
  ``res-out``: ``resnets[R]`` output (shortcut included);
- ``self-q/k/v`` / ``cross-q/k/v``: ``attn1``/``attn2`` ``to_q/to_k/to_v`` outputs, before the
  head split, tokens (B, N, C); ``cross-k/v`` are text-only (B, 77, C) and excluded by default;
- ``ffn-inner``: ``ff.net[0]`` output (the GEGLU, 4× width); ``out``: the BasicTransformerBlock
  output (after the FF residual); ``vit-out``: the Transformer2DModel output (outer residual in);
- ``*-sampler-out``: ``{up,down}samplers[0]`` output. ``up-levelL-upsampler-out`` already sits at
  level L+1's resolution; level indices count within a stage (up-level0 is the coarsest);
- ``self-map``/``cross-map``: head-averaged attention probabilities, recorded by an attention
  processor (:mod:`diffusion_features.attention`), reshaped to (B, Nk, h, w).

Counts (T1, T2): SD1.5 topology 197 IDs (229 with cross-k/v), SDXL topology 612.

DiT IDs (``PixArtTransformer2DModel``): ``vit-block{I}-{self-q,self-k,self-v,cross-q,
ffn-inner,out,self-map,cross-map}`` = 8·L (T3). Flux (``FluxTransformer2DModel``, a
reconstruction of the repo's scheme, no published selection): ``vit-block{I}-{q,k,v,attn-out,
norm-out,out}`` for the double-stream blocks and ``vit-single-block{I}-{q,k,v,attn-out,out}``
for the single-stream ones, image tokens only (text tokens sliced off).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from labcore.cli import UserError

__all__ = [
    "Activation",
    "catalogue",
    "catalogue_table",
    "resolve_ids",
    "xl_analysis_pool",
]

KINDS = (
    "unet-in",
    "unet-after-conv-in",
    "unet-out",
    "res-increment",
    "res-out",
    "self-q",
    "self-k",
    "self-v",
    "cross-q",
    "cross-k",
    "cross-v",
    "ffn-inner",
    "block-out",
    "vit-out",
    "upsampler",
    "downsampler",
    "self-map",
    "cross-map",
    "attn-out",
    "norm-out",
)
INCREMENTS = ("res-increment", "ffn-inner", "self-v")
MAPS = ("self-map", "cross-map")


@dataclass(frozen=True)
class Activation:
    """One catalogue entry.

    ``hook`` is ``"output"`` (forward hook on ``module``), ``"input"`` (pre-hook) or ``"map"``
    (attention processor on ``module``, an ``Attention``). ``scale`` is the downsampling factor
    of its grid relative to the latent (tokens: relative to the latent too, patch size
    included); ``tokens`` says the tensor is (B, N, C) and needs the grid to become a map.
    ``zone`` is ``in``/``out`` (the U-Net ends), ``down``, ``mid``, ``up-early`` (every up level
    but the last, i.e. the first half of the up stage), ``up-late`` (the last up level) or
    ``dit``. ``text_only`` marks cross-k/v (77 text tokens, no spatial grid).
    """

    id: str
    module: str
    hook: str
    stage: str
    level: int | None
    repeat: int | None
    block: int | None
    kind: str
    channels: int
    scale: int
    tokens: bool
    zone: str
    text_only: bool = False
    stream: str = "image"

    def side(self, latent_side: int) -> int:
        """Grid side for a square latent of ``latent_side`` (ceil division per halving)."""
        return grid_size(latent_side, self.scale)

    def as_dict(self) -> dict:
        return asdict(self)


def grid_size(n: int, scale: int) -> int:
    """Size after ``log2(scale)`` stride-2 halvings (each rounds up, as a padded conv does)."""
    while scale > 1:
        n, scale = (n + 1) // 2, scale // 2
    return n


def _ffn_width(ff: nn.Module) -> int:
    act = ff.net[0]
    proj = act.proj
    return proj.out_features // 2 if type(act).__name__ == "GEGLU" else proj.out_features


def _vit_ids(prefix, path, vit, scale, zone, stage, level, repeat, out) -> None:
    width = vit.transformer_blocks[0].attn1.to_q.out_features
    for i, blk in enumerate(vit.transformer_blocks):
        _block_ids(
            f"{prefix}-vit-block{i}",
            f"{path}.transformer_blocks.{i}",
            blk,
            scale,
            zone,
            stage,
            level,
            repeat,
            i,
            out,
        )
    out.append(
        Activation(
            f"{prefix}-vit-out",
            path,
            "output",
            stage,
            level,
            repeat,
            None,
            "vit-out",
            vit.config.out_channels or width,
            scale,
            False,
            zone,
        )
    )


def _block_ids(prefix, path, blk, scale, zone, stage, level, repeat, i, out) -> None:
    def add(suffix, module, hook, kind, ch, tokens=True, text_only=False):
        out.append(
            Activation(
                f"{prefix}-{suffix}",
                module,
                hook,
                stage,
                level,
                repeat,
                i,
                kind,
                ch,
                scale,
                tokens,
                zone,
                text_only,
            )
        )

    a1, a2 = blk.attn1, blk.attn2
    add("self-q", f"{path}.attn1.to_q", "output", "self-q", a1.to_q.out_features)
    add("self-k", f"{path}.attn1.to_k", "output", "self-k", a1.to_k.out_features)
    add("self-v", f"{path}.attn1.to_v", "output", "self-v", a1.to_v.out_features)
    if a2 is not None:
        add("cross-q", f"{path}.attn2.to_q", "output", "cross-q", a2.to_q.out_features)
        add(
            "cross-k",
            f"{path}.attn2.to_k",
            "output",
            "cross-k",
            a2.to_k.out_features,
            text_only=True,
        )
        add(
            "cross-v",
            f"{path}.attn2.to_v",
            "output",
            "cross-v",
            a2.to_v.out_features,
            text_only=True,
        )
    add("ffn-inner", f"{path}.ff.net.0", "output", "ffn-inner", _ffn_width(blk.ff))
    add("out", path, "output", "block-out", a1.to_q.in_features)
    add("self-map", f"{path}.attn1", "map", "self-map", -1)  # channels = #image tokens
    if a2 is not None:
        add("cross-map", f"{path}.attn2", "map", "cross-map", -1)  # channels = #text tokens


def _res_ids(prefix, path, res, scale, zone, stage, level, repeat, out) -> None:
    ch = res.conv2.out_channels
    out.append(
        Activation(
            f"{prefix}-res-increment",
            f"{path}.conv2",
            "output",
            stage,
            level,
            repeat,
            None,
            "res-increment",
            ch,
            scale,
            False,
            zone,
        )
    )
    out.append(
        Activation(
            f"{prefix}-res-out",
            path,
            "output",
            stage,
            level,
            repeat,
            None,
            "res-out",
            ch,
            scale,
            False,
            zone,
        )
    )


def _unet(model) -> list[Activation]:
    out: list[Activation] = []
    n = len(model.down_blocks)
    out.append(
        Activation(
            "unet-in",
            "conv_in",
            "input",
            "unet",
            None,
            None,
            None,
            "unet-in",
            model.conv_in.in_channels,
            1,
            False,
            "in",
        )
    )
    out.append(
        Activation(
            "unet-after-conv-in",
            "conv_in",
            "output",
            "unet",
            None,
            None,
            None,
            "unet-after-conv-in",
            model.conv_in.out_channels,
            1,
            False,
            "in",
        )
    )
    for L, blk in enumerate(model.down_blocks):
        scale, base = 2**L, f"down_blocks.{L}"
        for R, res in enumerate(blk.resnets):
            _res_ids(
                f"down-level{L}-repeat{R}",
                f"{base}.resnets.{R}",
                res,
                scale,
                "down",
                "down",
                L,
                R,
                out,
            )
            if getattr(blk, "attentions", None) is not None and R < len(blk.attentions):
                _vit_ids(
                    f"down-level{L}-repeat{R}",
                    f"{base}.attentions.{R}",
                    blk.attentions[R],
                    scale,
                    "down",
                    "down",
                    L,
                    R,
                    out,
                )
        if blk.downsamplers:
            ds = blk.downsamplers[0]
            out.append(
                Activation(
                    f"down-level{L}-downsampler-out",
                    f"{base}.downsamplers.0",
                    "output",
                    "down",
                    L,
                    None,
                    None,
                    "downsampler",
                    ds.out_channels,
                    2 * scale,
                    False,
                    "down",
                )
            )
    mid, scale = model.mid_block, 2 ** (n - 1)
    if mid is not None:
        for R, res in enumerate(mid.resnets):
            _res_ids(
                f"mid-repeat{R}", f"mid_block.resnets.{R}", res, scale, "mid", "mid", None, R, out
            )
            if getattr(mid, "attentions", None) is not None and R < len(mid.attentions):
                _vit_ids(
                    f"mid-repeat{R}",
                    f"mid_block.attentions.{R}",
                    mid.attentions[R],
                    scale,
                    "mid",
                    "mid",
                    None,
                    R,
                    out,
                )
    for L, blk in enumerate(model.up_blocks):
        scale, base = 2 ** (n - 1 - L), f"up_blocks.{L}"
        zone = "up-late" if L == len(model.up_blocks) - 1 else "up-early"
        for R, res in enumerate(blk.resnets):
            _res_ids(
                f"up-level{L}-repeat{R}", f"{base}.resnets.{R}", res, scale, zone, "up", L, R, out
            )
            if getattr(blk, "attentions", None) is not None and R < len(blk.attentions):
                _vit_ids(
                    f"up-level{L}-repeat{R}",
                    f"{base}.attentions.{R}",
                    blk.attentions[R],
                    scale,
                    zone,
                    "up",
                    L,
                    R,
                    out,
                )
        if blk.upsamplers:
            us = blk.upsamplers[0]
            out.append(
                Activation(
                    f"up-level{L}-upsampler-out",
                    f"{base}.upsamplers.0",
                    "output",
                    "up",
                    L,
                    None,
                    None,
                    "upsampler",
                    us.out_channels,
                    max(scale // 2, 1),
                    False,
                    zone,
                )
            )
    out.append(
        Activation(
            "unet-out",
            "conv_out",
            "output",
            "unet",
            None,
            None,
            None,
            "unet-out",
            model.conv_out.out_channels,
            1,
            False,
            "out",
        )
    )
    return out


def _pixart(model) -> list[Activation]:
    out: list[Activation] = []
    patch = int(model.config.patch_size)
    for i, blk in enumerate(model.transformer_blocks):
        _block_ids(
            f"vit-block{i}", f"transformer_blocks.{i}", blk, patch, "dit", "dit", None, None, i, out
        )
    return out


def _flux(model) -> list[Activation]:
    out: list[Activation] = []
    patch = 2 * int(model.config.patch_size)  # the pipeline packs 2×2 latent pixels per token

    def add(prefix, path, i, suffix, module, kind, ch, stream):
        out.append(
            Activation(
                f"{prefix}{i}-{suffix}",
                f"{path}.{i}{module}",
                "output",
                "dit",
                None,
                None,
                i,
                kind,
                ch,
                patch,
                True,
                "dit",
                stream=stream,
            )
        )

    for i, blk in enumerate(model.transformer_blocks):
        d = blk.attn.to_q.out_features
        for s in ("q", "k", "v"):
            add("vit-block", "transformer_blocks", i, s, f".attn.to_{s}", f"self-{s}", d, "image")
        add("vit-block", "transformer_blocks", i, "attn-out", ".attn", "attn-out", d, "first")
        add("vit-block", "transformer_blocks", i, "norm-out", ".norm2", "norm-out", d, "image")
        add("vit-block", "transformer_blocks", i, "out", "", "block-out", d, "second")
    for i, blk in enumerate(model.single_transformer_blocks):
        d = blk.attn.to_q.out_features
        for s in ("q", "k", "v"):
            add(
                "vit-single-block",
                "single_transformer_blocks",
                i,
                s,
                f".attn.to_{s}",
                f"self-{s}",
                d,
                "joint",
            )
        add(
            "vit-single-block",
            "single_transformer_blocks",
            i,
            "attn-out",
            ".attn",
            "attn-out",
            d,
            "joint",
        )
        add("vit-single-block", "single_transformer_blocks", i, "out", "", "block-out", d, "second")
    return out


def catalogue(model: nn.Module, *, cross_kv: bool = False, maps: bool = True) -> list[Activation]:
    """Every candidate activation of ``model`` in forward order (see the module docstring).

    ``cross_kv=True`` adds the text-only cross-attention keys/values (the repo drops them);
    ``maps=False`` leaves out the attention-map IDs.
    """
    name = type(model).__name__
    if name == "UNet2DConditionModel":
        acts = _unet(model)
    elif name == "PixArtTransformer2DModel":
        acts = _pixart(model)
    elif name == "FluxTransformer2DModel":
        acts = _flux(model)
    else:
        raise UserError(
            f"no catalogue for {name}; supported: UNet2DConditionModel, "
            "PixArtTransformer2DModel, FluxTransformer2DModel"
        )
    if not cross_kv:
        acts = [a for a in acts if not a.text_only]
    if not maps:
        acts = [a for a in acts if a.kind not in MAPS]
    return acts


def resolve_ids(model: nn.Module, ids) -> list[Activation]:
    """The catalogue entries for ``ids`` (in the order given); unknown IDs → one UserError."""
    by_id = {a.id: a for a in catalogue(model, cross_kv=True)}
    ids = list(ids)
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        import difflib

        hint = difflib.get_close_matches(unknown[0], list(by_id), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise UserError(
            f"unknown activation ID(s) for {type(model).__name__}: "
            f"{', '.join(unknown)}{extra}; `diffusion_features catalogue` "
            "lists them"
        )
    if not ids:
        raise UserError("no activation IDs given")
    return [by_id[i] for i in ids]


_DEEP_BLOCKS = (0, 1, 3, 5, 7, 9)


def xl_analysis_pool(model: nn.Module) -> list[Activation]:
    """The SDXL analysis pool (``config_xl_analysis.json``, 279 IDs on the SDXL topology): every
    res-increment/res-out, vit-out and sampler, and per transformer block self-q, self-k,
    cross-q, ffn-inner and out, with only blocks {0, 1, 3, 5, 7, 9} of 10-deep ViTs."""
    keep = (
        "res-increment",
        "res-out",
        "vit-out",
        "upsampler",
        "downsampler",
        "self-q",
        "self-k",
        "cross-q",
        "ffn-inner",
        "block-out",
    )
    depth: dict[tuple, int] = {}
    acts = [a for a in catalogue(model) if a.kind in keep and a.stage in ("down", "mid", "up")]
    for a in acts:
        if a.block is not None:
            key = (a.stage, a.level, a.repeat)
            depth[key] = max(depth.get(key, 0), a.block + 1)
    return [
        a
        for a in acts
        if a.block is None or depth[(a.stage, a.level, a.repeat)] < 10 or a.block in _DEEP_BLOCKS
    ]


def catalogue_table(acts: list[Activation], latent_side: int | None = None) -> str:
    """A readable fixed-width table of ``acts`` (with grid sides for ``latent_side``)."""
    head = f"{'id':52s} {'kind':18s} {'zone':8s} {'ch':>6s} {'scale':>5s}"
    head += f" {'side':>5s}" if latent_side else ""
    rows = [head, "-" * len(head)]
    for a in acts:
        ch = "maps" if a.channels < 0 else str(a.channels)
        row = f"{a.id:52s} {a.kind:18s} {a.zone:8s} {ch:>6s} {a.scale:>5d}"
        if latent_side:
            row += f" {'-' if a.text_only else a.side(latent_side):>5}"
        rows.append(row)
    return "\n".join(rows)
