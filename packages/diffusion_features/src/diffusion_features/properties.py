"""The three properties of Paper B as numbers, and the qualitative filter they justify.

The paper finds the properties by eye (PCA-to-RGB visualisations); these indices are this
package's quantitative stand-ins (the spec's §4.3), used to *prune*, never to rank:

- **noise index** (asymmetric diffusion noise)::

      F̂_c = (F_c − mean_c) / std_c                      per-channel standardisation
      NI(F) = mean_ij ‖(ΔF̂)_ij‖₂ / mean_ij ‖F̂_ij − mean F̂‖₂

  Δ is the 5-point spatial Laplacian per channel (replicate padding), ‖·‖₂ is over channels.
  High-frequency noise raises the numerator; a smooth map gives ≈ 0.
- **granularity** (in-resolution granularity change): k-means (k clusters) on the pixel
  features, then the mean size in pixels of the 4-connected components of the label map. Coarse
  features → large components. (``method="spectral"``: the radially averaged spectral centroid,
  in cycles per pixel, larger = finer.)
- **locality index** (locality without positional embeddings)::

      LI(F, S) = mean cos(F_p, F_q) over neighbours q of p (‖p − q‖_∞ ≤ r) with S_q ≠ S_p
               − mean cos(F_p, F_q) over pixel pairs with S_q = S_p and ‖p − q‖₂ > R

  Semantic features (no locality) score ≤ 0; a positional component makes nearby pixels alike
  regardless of class and pushes LI up.

:func:`qualitative_filter` applies the paper's four rules (§2) to a catalogue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from diffusion_features.catalogue import INCREMENTS, MAPS, Activation

__all__ = ["granularity", "locality_index", "noise_index", "qualitative_filter"]


def _chw(feat) -> torch.Tensor:
    f = torch.as_tensor(np.asarray(feat) if not isinstance(feat, torch.Tensor) else feat)
    f = f.float()
    if f.ndim == 4:
        if f.shape[0] != 1:
            raise ValueError("give one feature map (C, H, W) or (1, C, H, W)")
        f = f[0]
    if f.ndim != 3:
        raise ValueError(f"feature map must be (C, H, W), got {tuple(f.shape)}")
    return f


def _standardise(f: torch.Tensor) -> torch.Tensor:
    mu = f.mean(dim=(1, 2), keepdim=True)
    sd = f.std(dim=(1, 2), keepdim=True).clamp_min(1e-8)
    return (f - mu) / sd


def noise_index(feat) -> float:
    """Laplacian energy over deviation energy of the standardised map (see module docstring)."""
    f = _standardise(_chw(feat))
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    c = f.shape[0]
    lap = F.conv2d(
        F.pad(f[None], (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3), groups=c
    )[0]
    num = lap.norm(dim=0).mean()
    den = (f - f.mean(dim=(1, 2), keepdim=True)).norm(dim=0).mean().clamp_min(1e-8)
    return float(num / den)


def granularity(feat, k: int = 4, method: str = "components", seed: int = 0) -> float:
    """Mean connected-component size of k-means labels (pixels), or the spectral centroid."""
    f = _chw(feat)
    if method == "spectral":
        f = _standardise(f)
        power = torch.fft.fft2(f).abs().pow(2).sum(0)
        power[0, 0] = 0
        h, w = power.shape
        fy = torch.fft.fftfreq(h)[:, None].expand(h, w)
        fx = torch.fft.fftfreq(w)[None, :].expand(h, w)
        radius = (fy**2 + fx**2).sqrt()
        return float((radius * power).sum() / power.sum().clamp_min(1e-12))
    if method != "components":
        raise ValueError(f"method must be components or spectral, got {method!r}")
    from scipy import ndimage
    from sklearn.cluster import KMeans

    c, h, w = f.shape
    x = _standardise(f).reshape(c, -1).T.numpy()
    labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x).reshape(h, w)
    sizes = []
    for lab in range(k):
        comp, n = ndimage.label(labels == lab)
        if n:
            sizes.append(np.bincount(comp.ravel())[1:])
    return float(np.concatenate(sizes).mean())


def locality_index(
    feat, sem_mask, r: int = 2, R: float = 8.0, n_pairs: int = 20000, seed: int = 0
) -> float:
    """Neighbour-of-other-class similarity minus far-same-class similarity (module docstring)."""
    f = _chw(feat)
    s = torch.as_tensor(np.asarray(sem_mask)).long()
    c, h, w = f.shape
    if tuple(s.shape) != (h, w):
        raise ValueError(f"sem_mask {tuple(s.shape)} does not match the feature grid {(h, w)}")
    u = F.normalize(f, dim=0)
    near_sum, near_n = 0.0, 0
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx == 0:
                continue
            ys, ye = max(0, -dy), min(h, h - dy)
            xs, xe = max(0, -dx), min(w, w - dx)
            a = u[:, ys:ye, xs:xe]
            b = u[:, ys + dy : ye + dy, xs + dx : xe + dx]
            diff = s[ys:ye, xs:xe] != s[ys + dy : ye + dy, xs + dx : xe + dx]
            cos = (a * b).sum(0)
            near_sum += float(cos[diff].sum())
            near_n += int(diff.sum())
    g = torch.Generator().manual_seed(seed)
    p = torch.randint(0, h * w, (n_pairs,), generator=g)
    q = torch.randint(0, h * w, (n_pairs,), generator=g)
    py, px, qy, qx = p // w, p % w, q // w, q % w
    dist = ((py - qy) ** 2 + (px - qx) ** 2).float().sqrt()
    flat_s = s.reshape(-1)
    keep = (flat_s[p] == flat_s[q]) & (dist > R)
    if near_n == 0 or int(keep.sum()) == 0:
        raise ValueError("locality_index needs both class boundaries and far same-class pairs")
    flat_u = u.reshape(c, -1)
    far = (flat_u[:, p[keep]] * flat_u[:, q[keep]]).sum(0).mean()
    return near_sum / near_n - float(far)


def default_levels(acts: Sequence[Activation]) -> tuple[list[int], list[int]]:
    """(clean, noisy) up levels: the last up level is noisy; the earlier ones are clean unless
    coarser than 1/4 of the latent (SD1.5's 8² up-level0 is dropped as too coarse)."""
    up = sorted({a.level for a in acts if a.stage == "up" and a.level is not None})
    if not up:
        return [], []
    scale = {a.level: a.scale for a in acts if a.stage == "up" and a.kind == "res-out"}
    noisy = [up[-1]]
    clean = [L for L in up[:-1] if scale.get(L, 1) <= 4]
    return clean, noisy


def qualitative_filter(
    acts: Iterable[Activation],
    clean_levels: Sequence[int] | None = None,
    noisy_levels: Sequence[int] | None = None,
) -> list[Activation]:
    """The §2 rules: (1) keep only the clean first half of the up stage (and the noisy last
    level for rule 3); (2) there, drop self-attention q/k (locality); (3) in the noisy later half
    keep *only* self-attention q/k (locality suppresses the noise); (4) drop every increment
    (res-increment, ffn-inner, self-v), text-only cross-k/v and attention maps.

    Defaults: :func:`default_levels` (SD1.5: clean 1–2, noisy 3; SDXL: clean 0–1, noisy 2).
    SD1.5 → 32 IDs, the SDXL 279 pool → 62 (see ``selections.TABLE6_SD15`` for the deltas).
    """
    acts = list(acts)
    d_clean, d_noisy = default_levels(acts)
    clean = set(d_clean if clean_levels is None else clean_levels)
    noisy = set(d_noisy if noisy_levels is None else noisy_levels)
    out = []
    for a in acts:
        if a.stage != "up" or a.kind in INCREMENTS or a.kind in MAPS or a.text_only:
            continue
        if a.level in clean and a.kind not in ("self-q", "self-k"):
            out.append(a)
        elif a.level in noisy and a.kind in ("self-q", "self-k"):
            out.append(a)
    return out
