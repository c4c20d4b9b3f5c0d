"""Batched weak and strong views (seeded generators, no per-sample Python loop for weak views).

weak: random shift by up to ``shift`` pixels (zero padding), optional horizontal flip.
strong ``noise_erase`` (the spec's digits recipe): weak + N(0, 0.1^2) pixel noise + one random
erased square of a quarter of the side (clamped to [0, 1]). strong ``randaugment`` (CIFAR):
torchvision RandAugment(2, 10) per image on uint8, then the same erasing (FixMatch's cutout).
"""

from __future__ import annotations

import torch

from dsa_ensemble.data import to_float

__all__ = ["random_erase", "random_shift", "strong_view", "weak_view"]


def random_shift(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by (dy, dx) in [-shift, shift]^2 with zero fill; (N, C, H, W)."""
    if shift <= 0:
        return x
    n, _, h, w = x.shape
    pad = torch.nn.functional.pad(x, (shift, shift, shift, shift))
    d = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator)
    rows = (d[:, 0, None] + torch.arange(h)[None]).to(x.device)  # (N, H)
    cols = (d[:, 1, None] + torch.arange(w)[None]).to(x.device)  # (N, W)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = pad.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_erase(x: torch.Tensor, generator: torch.Generator, frac: float = 0.25) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = max(1, round(h * frac)), max(1, round(w * frac))
    top = torch.randint(0, h - sh + 1, (n,), generator=generator)
    left = torch.randint(0, w - sw + 1, (n,), generator=generator)
    r = torch.arange(h)[None, :, None]
    c = torch.arange(w)[None, None, :]
    box = ((r >= top[:, None, None]) & (r < (top + sh)[:, None, None])
           & (c >= left[:, None, None]) & (c < (left + sw)[:, None, None]))  # fmt: skip
    return x.masked_fill(box[:, None].to(x.device), 0.0)


def weak_view(x: torch.Tensor, generator: torch.Generator, shift: int = 1,
              flip: bool = False) -> torch.Tensor:  # fmt: skip
    """Float (N, C, H, W) in [0, 1]: shift (and flip)."""
    x = random_shift(to_float(x), shift, generator)
    if flip:
        m = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(m[:, None, None, None].to(x.device), x.flip(-1), x)
    return x


def strong_view(x: torch.Tensor, generator: torch.Generator, shift: int = 1, flip: bool = False,
                kind: str = "noise_erase", noise: float = 0.1) -> torch.Tensor:  # fmt: skip
    if kind == "randaugment" and x.dtype == torch.uint8:
        from torchvision.transforms import v2

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # RandAugment draws from the global RNG
        ra = v2.RandAugment(num_ops=2, magnitude=10)
        x = torch.stack([ra(img) for img in x.cpu()]).to(x.device)
        torch.random.set_rng_state(state)
        return random_erase(weak_view(x, generator, shift, flip), generator, 0.5)
    x = weak_view(x, generator, shift, flip)
    eps = torch.randn(x.shape, generator=generator).to(x.device)
    return random_erase((x + noise * eps).clamp_(0, 1), generator)
