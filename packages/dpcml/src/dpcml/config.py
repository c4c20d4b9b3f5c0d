"""Hyperparameters of DPCML as plain, serialisable data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["DPCMLConfig"]

SAMPLINGS = ("uniform", "hard")
HARD_MODES = ("hardest", "softmax", "topk")
DCRS_FORMS = ("code", "paper")


@dataclass
class DPCMLConfig:
    """DPCML hyperparameters. Defaults are the official ``shells/run.sh`` values for DPCML2 on
    Steam-200k (not the ``parse_args`` defaults, which switch DCRS off).

    ``n_vectors=1, dcrs_weight=0`` is plain CML.
    """

    dim: int = 100  # d, embedding size
    n_vectors: int = 5  # C, vectors per user (run.sh: per_user_k=5)
    margin: float = 1.0  # λ in hinge(λ + s(u,v+) − s(u,v−))
    max_norm: float = 1.0  # item max_norm, and the norm every user vector is projected to
    dcrs_weight: float = 10.0  # η (official name: reg); 0 switches DCRS off
    delta1: float = 0.05  # δ1 (official m1), lower diversity bound
    delta2: float = 0.25  # δ2 (official m2), upper diversity bound
    dcrs: str = "code"  # "code": per-ordered-pair hinge over all users; "paper": per-user mean δ_u
    sampling: str = "hard"  # "uniform" = DPCML1 (S triplets per pair), "hard" = DPCML2
    num_negatives: int = 10  # S
    hard_mode: str = "hardest"  # official "hardest"; "softmax"/"topk" are DiHarS reconstructions
    hard_temperature: float = 0.1  # τ of the softmax weights (reconstruction)
    hard_beta: float = 0.3  # β: average the hinge over the ⌈βS⌉ hardest (reconstruction)
    adaptive: bool = False  # APA reconstruction: C_u = min(C, max(1, ⌊log2 n_u⌋))
    lr: float = 1e-3  # Adam learning rate
    batch_size: int = 256
    epochs: int = 100

    def __post_init__(self) -> None:
        for name, allowed in (("sampling", SAMPLINGS), ("hard_mode", HARD_MODES),
                              ("dcrs", DCRS_FORMS)):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.dim < 1 or self.n_vectors < 1 or self.num_negatives < 1:
            raise ValueError("dim, n_vectors and num_negatives must be positive")
        if self.batch_size < 1 or self.epochs < 0 or self.max_norm <= 0:
            raise ValueError("batch_size must be >= 1, epochs >= 0 and max_norm > 0")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DPCMLConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
