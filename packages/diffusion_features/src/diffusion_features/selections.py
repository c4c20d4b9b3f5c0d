"""Named activation selections of Paper B (and the legacy baselines), and the paper's post-filter
tables for checking :func:`~diffusion_features.properties.qualitative_filter`.

The final picks come from per-activation label-scarce runs on two datasets (Horse-21 and
Bedroom-28); the filter only prunes. The presets are IDs of the real SD1.5 / SDXL / PG v2
topologies and resolve on the tiny models with the same topology.
"""

from __future__ import annotations

from diffusion_features.extract import UP_CROSS

__all__ = [
    "LEGACY_V15",
    "LEGACY_XL",
    "OURS_V15",
    "OURS_XL",
    "OURS_XL_T",
    "PRESETS",
    "TABLE6_SD15",
    "TABLES45_XL",
    "jaccard",
]

# config_15_practical.json: 1280 + 1280 + 640 + 320 = 3520 channels on SD1.5
OURS_V15 = (
    "up-level1-repeat1-vit-block0-cross-q",
    "up-level1-repeat2-res-out",
    "up-level2-repeat1-vit-block0-cross-q",
    "up-level3-repeat0-vit-block0-self-k",
)
# config_xl_practical.json: 1280 + 1280 + 640 + 640 = 3840 channels on SDXL (128² level skipped)
OURS_XL = (
    "up-level0-repeat0-vit-block7-out",
    "up-level0-repeat0-vit-block5-out",
    "up-level1-repeat0-vit-block0-cross-q",
    "up-level1-repeat0-vit-block0-out",
)
# Ours-XL-t (8154 ch): three backbones, plain concatenation
OURS_XL_T = {
    "sdxl": OURS_XL,
    "sd15": (
        "up-level1-repeat1-vit-block0-cross-q",
        "up-level2-repeat1-vit-block0-cross-q",
        "up-level2-upsampler-out",
        "up-level3-repeat0-vit-block0-self-k",
        UP_CROSS,
    ),
    "pgv2": ("up-level0-repeat0-vit-block3-out",),
}
# large-scale segmentation variants (ade_full / city_full)
FULL_SEG = {
    "sdxl": (*OURS_XL, "up-level1-upsampler-out"),
    "pgv2": (
        "up-level0-repeat0-vit-block5-out",
        "up-level1-repeat0-vit-block0-cross-q",
        "up-level1-upsampler-out",
    ),
}
LEGACY_V15 = (
    "up-level0-upsampler-out",
    "up-level1-upsampler-out",
    "up-level2-upsampler-out",
    "up-level3-repeat2-vit-out",
)
LEGACY_XL = ("up-level0-upsampler-out", "up-level1-upsampler-out", "up-level2-repeat2-res-out")

PRESETS = {
    "ours-v1.5": OURS_V15,
    "ours-xl": OURS_XL,
    "legacy-v1.5": LEGACY_V15,
    "legacy-xl": LEGACY_XL,
}


def _vit(level, repeat, block, suffix):
    return f"up-level{level}-repeat{repeat}-vit-block{block}-{suffix}"


def _table6() -> tuple[str, ...]:
    """Paper B Table 6 (SD1.5, 33 IDs): up-level1 and up-level2 {res-out, cross-q, block0-out,
    vit-out} × 3 repeats; up-level2 also self-q/k of repeat 2 and upsampler-out; up-level3
    self-q/k × 3. (up-level1-upsampler-out is not in the table.)"""
    ids = []
    for level in (1, 2):
        for r in range(3):
            ids += [
                f"up-level{level}-repeat{r}-res-out",
                _vit(level, r, 0, "cross-q"),
                _vit(level, r, 0, "out"),
                f"up-level{level}-repeat{r}-vit-out",
            ]
    ids += [_vit(2, 2, 0, "self-q"), _vit(2, 2, 0, "self-k"), "up-level2-upsampler-out"]
    for r in range(3):
        ids += [_vit(3, r, 0, "self-q"), _vit(3, r, 0, "self-k")]
    return tuple(ids)


def _tables45() -> tuple[str, ...]:
    """Paper B Tables 4–5 (SDXL/PG v2, 43 + 20 IDs). Table 4, up-level0: res-out, blocks
    {0, 1, 3, 5, 7, 9} × {cross-q, out} and vit-out per repeat, plus upsampler-out. Table 5,
    up-level1: res-out, blocks 0–1 × {cross-q, out}, vit-out per repeat, plus self-k of blocks
    0–1 in repeat 2; no up-level1-upsampler-out."""
    ids = []
    for r in range(3):
        ids.append(f"up-level0-repeat{r}-res-out")
        for b in (0, 1, 3, 5, 7, 9):
            ids += [_vit(0, r, b, "cross-q"), _vit(0, r, b, "out")]
        ids.append(f"up-level0-repeat{r}-vit-out")
    ids.append("up-level0-upsampler-out")
    for r in range(3):
        ids.append(f"up-level1-repeat{r}-res-out")
        for b in (0, 1):
            ids += [_vit(1, r, b, "cross-q"), _vit(1, r, b, "out")]
        ids.append(f"up-level1-repeat{r}-vit-out")
    ids += [_vit(1, 2, 0, "self-k"), _vit(1, 2, 1, "self-k")]
    return tuple(ids)


TABLE6_SD15 = _table6()
TABLES45_XL = _tables45()


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0
