from collections import Counter

import pytest

from diffusion_features.catalogue import catalogue, resolve_ids, xl_analysis_pool
from diffusion_features.models import tiny_flux, tiny_pixart
from labcore.cli import UserError


def test_t1_sd15_topology_counts(sd15):
    acts = catalogue(sd15.model)
    assert len(acts) == 197 and len(catalogue(sd15.model, cross_kv=True)) == 229
    kinds = Counter(a.kind for a in acts)
    assert kinds["res-out"] == 22 and kinds["res-increment"] == 22  # 22 resnets
    assert kinds["vit-out"] == 16 and kinds["block-out"] == 16  # 16 ViTs, 1 block each
    assert kinds["upsampler"] == 3 and kinds["downsampler"] == 3
    assert kinds["self-map"] == kinds["cross-map"] == 16
    assert len({a.id for a in acts}) == 197  # unique IDs
    assert len(catalogue(sd15.model, maps=False)) == 197 - 32


def test_t1_metadata(sd15):
    by = {a.id: a for a in catalogue(sd15.model, cross_kv=True)}
    a = by["up-level1-repeat1-vit-block0-cross-q"]
    assert (a.module, a.channels, a.scale, a.zone, a.tokens) == (
        "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_q",
        64,
        4,
        "up-early",
        True,
    )
    assert by["up-level3-repeat0-vit-block0-self-k"].zone == "up-late"
    assert by["up-level2-upsampler-out"].scale == 1  # already at level 3's resolution
    assert by["up-level0-upsampler-out"].scale == 4
    assert by["down-level0-repeat0-res-increment"].module == "down_blocks.0.resnets.0.conv2"
    assert by["unet-in"].hook == "input" and by["unet-in"].module == "conv_in"
    assert by["mid-repeat0-vit-block0-ffn-inner"].channels == 4 * 64  # GEGLU, 4x width
    assert by["up-level1-repeat0-vit-block0-cross-k"].text_only
    assert by["up-level0-repeat0-res-out"].side(64) == 8


def test_t2_sdxl_topology_counts(sdxl):
    acts = catalogue(sdxl.model)
    assert len(acts) == 612
    kinds = Counter(a.kind for a in acts)
    assert kinds["block-out"] == 70 and kinds["vit-out"] == 11
    assert not [a for a in acts if a.stage == "up" and a.level == 2 and a.block is not None]
    assert not [a for a in acts if a.stage == "down" and a.level == 0 and a.block is not None]
    assert len(xl_analysis_pool(sdxl.model)) == 279


@pytest.mark.parametrize("layers", [2, 5])
def test_t3_pixart_8L(layers):
    acts = catalogue(tiny_pixart(num_layers=layers))
    assert len(acts) == 8 * layers
    assert {a.id.split("-", 2)[2] for a in acts} == {
        "self-q",
        "self-k",
        "self-v",
        "cross-q",
        "ffn-inner",
        "out",
        "self-map",
        "cross-map",
    }
    assert all(a.scale == 2 for a in acts)  # patch 2


def test_flux_catalogue():
    acts = catalogue(tiny_flux(num_layers=2, num_single_layers=3))
    assert len(acts) == 2 * 6 + 3 * 5
    assert {a.stream for a in acts if a.id.startswith("vit-single")} == {"joint", "second"}


def test_unknown_ids_named(sd15):
    with pytest.raises(UserError, match=r"up-level9-repeat0-res-out.*did you mean"):
        resolve_ids(sd15.model, ["up-level1-repeat2-res-out", "up-level9-repeat0-res-out"])
    with pytest.raises(UserError, match="no activation IDs"):
        resolve_ids(sd15.model, [])
