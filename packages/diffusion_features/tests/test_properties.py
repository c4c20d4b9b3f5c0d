import torch

from diffusion_features.catalogue import catalogue, xl_analysis_pool
from diffusion_features.properties import (
    granularity,
    locality_index,
    noise_index,
    qualitative_filter,
)
from diffusion_features.selections import OURS_V15, OURS_XL, TABLE6_SD15, TABLES45_XL, jaccard


def test_t5_filter_sd15(sd15):
    ids = [a.id for a in qualitative_filter(catalogue(sd15.model))]
    assert len(ids) == 32 and len(TABLE6_SD15) == 33
    assert set(OURS_V15) <= set(ids)
    assert jaccard(ids, TABLE6_SD15) >= 0.9
    # the documented deltas: the table keeps self-q/k of the clean zone's last ViT and omits
    # up-level1-upsampler-out
    assert set(TABLE6_SD15) - set(ids) == {
        "up-level2-repeat2-vit-block0-self-q",
        "up-level2-repeat2-vit-block0-self-k",
    }
    assert set(ids) - set(TABLE6_SD15) == {"up-level1-upsampler-out"}


def test_t5_filter_sdxl_pool(sdxl):
    ids = [a.id for a in qualitative_filter(xl_analysis_pool(sdxl.model))]
    assert len(ids) == 62 and len(TABLES45_XL) == 63
    assert set(OURS_XL) <= set(ids)
    assert jaccard(ids, TABLES45_XL) >= 0.9
    assert set(TABLES45_XL) - set(ids) == {
        "up-level1-repeat2-vit-block0-self-k",
        "up-level1-repeat2-vit-block1-self-k",
    }
    assert set(ids) - set(TABLES45_XL) == {"up-level1-upsampler-out"}
    # rule 3 on the full SDXL catalogue: up-level2 has no ViT, so nothing noisy survives
    assert not [a for a in qualitative_filter(catalogue(sdxl.model)) if a.level == 2]


def _grid(n=32):
    return torch.meshgrid(torch.linspace(0, 1, n), torch.linspace(0, 1, n), indexing="ij")


def test_t9_noise_index_rises_with_white_noise():
    yy, xx = _grid()
    smooth = torch.stack([torch.sin(3 * xx + k) + torch.cos(2 * yy * k) for k in range(8)])
    g = torch.Generator().manual_seed(0)
    values = [
        noise_index(smooth + s * torch.randn(smooth.shape, generator=g)) for s in (0, 0.1, 0.3, 1.0)
    ]
    assert values == sorted(values) and values[0] < 0.2 < 1.0 < values[-1]


def _checker(period, n=64):
    i = torch.arange(n)
    c = ((i[:, None] // period + i[None, :] // period) % 2).float()
    return torch.stack([c, 1 - c, 0.5 * c])


def test_t9_granularity_orders_checkerboards():
    comp = [granularity(_checker(p), k=2) for p in (32, 8, 2)]
    assert comp == [32.0 * 32, 8.0 * 8, 2.0 * 2]  # exact component sizes
    spec = [granularity(_checker(p), method="spectral") for p in (32, 8, 2)]
    assert spec[0] < spec[1] < spec[2]  # finer = higher spectral centroid


def test_t9_locality_index():
    yy, xx = _grid()
    sem = torch.zeros(32, 32, dtype=torch.long)
    sem[8:20, 5:15] = 1
    sem[20:30, 18:30] = 2
    onehot = torch.nn.functional.one_hot(sem, 3).permute(2, 0, 1).float()
    pos = torch.cat(
        [
            torch.stack(
                [
                    torch.sin(6.28 * f * xx),
                    torch.cos(6.28 * f * xx),
                    torch.sin(6.28 * f * yy),
                    torch.cos(6.28 * f * yy),
                ]
            )
            for f in (1, 2)
        ]
    )
    values = [locality_index(torch.cat([onehot, a * pos]), sem) for a in (0.0, 0.5, 1.0, 2.0)]
    assert values[0] <= 0 and abs(values[0] + 1) < 1e-6  # one-hot: 0 - 1
    assert values == sorted(values) and values[-1] > 0.5
