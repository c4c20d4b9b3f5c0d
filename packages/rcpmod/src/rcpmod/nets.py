"""One MLP autoencoder per view (official ``Autoencoder`` with ``batchnorm=False``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ViewAutoencoder"]


class ViewAutoencoder(nn.Module):
    """Encoder ``d → h_1 → … → latent`` (Linear + ReLU, no activation on the latent) and the
    mirrored decoder (Linear + ReLU, then Linear + Sigmoid: inputs are min-max scaled).

    Args:
        in_dim: features of the view. hidden: widths between input and latent. latent: size.
    Shapes: ``encode (n, in_dim) → (n, latent)``; ``decode (n, latent) → (n, in_dim)``.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], latent: int):
        super().__init__()
        dims = [int(in_dim), *map(int, hidden), int(latent)]
        enc: list[nn.Module] = []
        for i in range(len(dims) - 1):
            enc.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                enc.append(nn.ReLU())
        rev = dims[::-1]
        dec: list[nn.Module] = []
        for i in range(len(rev) - 1):
            dec.append(nn.Linear(rev[i], rev[i + 1]))
            dec.append(nn.ReLU() if i < len(rev) - 2 else nn.Sigmoid())
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self.dims = dims

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return self.decoder(z), z

    def __repr__(self) -> str:
        return f"ViewAutoencoder({' → '.join(map(str, self.dims))}, sigmoid output)"
