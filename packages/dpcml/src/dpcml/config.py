"""Hyperparameters of DPCML as plain, serialisable data.

Each field carries its help text and its range in ``metadata``; :meth:`DPCMLConfig.__post_init__`
checks every range (so the Python API and the CLI fail the same way), and the CLI derives one flag
per field, with the matching ``labcore.cli`` argparse type, from the same metadata.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from labcore.cli import UserError

__all__ = ["DPCMLConfig"]

SAMPLINGS = ("uniform", "hard")
HARD_MODES = ("hardest", "softmax", "topk")
DCRS_FORMS = ("code", "paper")

# range name -> (test, how it reads in an error message)
RANGES = {
    "positive_int": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "positive_float": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "nonnegative_float": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "beta": (lambda v: math.isfinite(v) and 0 < v <= 1, "in (0, 1]"),
}


def _opt(default, help: str, range: str | None = None, choices: tuple | None = None):
    return field(default=default, metadata={"help": help, "range": range, "choices": choices})


@dataclass
class DPCMLConfig:
    """DPCML hyperparameters. Defaults are the official ``shells/run.sh`` values for DPCML2 on
    Steam-200k (not the ``parse_args`` defaults, which switch DCRS off).

    ``n_vectors=1, dcrs_weight=0`` is plain CML.
    """

    dim: int = _opt(100, "d, embedding size", "positive_int")
    n_vectors: int = _opt(5, "C, vectors per user (run.sh: per_user_k=5)", "positive_int")
    margin: float = _opt(1.0, "λ in hinge(λ + s(u,v+) − s(u,v−))", "positive_float")
    max_norm: float = _opt(1.0, "item max-norm, and the norm every user vector is projected to",
                           "positive_float")  # fmt: skip
    dcrs_weight: float = _opt(10.0, "η (official name: reg); 0 switches DCRS off",
                              "nonnegative_float")  # fmt: skip
    delta1: float = _opt(0.05, "δ1 (official m1), lower diversity bound", "nonnegative_float")
    delta2: float = _opt(0.25, "δ2 (official m2), upper diversity bound; DCRS is off unless "
                         "δ1 < δ2", "nonnegative_float")  # fmt: skip
    dcrs: str = _opt("code", "code: per-ordered-pair hinge over all users; paper: per-user "
                     "mean δ_u", choices=DCRS_FORMS)  # fmt: skip
    sampling: str = _opt("hard", "uniform = DPCML1 (S triplets per pair), hard = DPCML2 "
                         "(the hardest of S)", choices=SAMPLINGS)  # fmt: skip
    num_negatives: int = _opt(10, "S, negatives drawn per positive pair", "positive_int")
    hard_mode: str = _opt("hardest", "official hardest; softmax / topk are DiHarS "
                          "reconstructions", choices=HARD_MODES)  # fmt: skip
    hard_temperature: float = _opt(0.1, "τ of the softmax weights (reconstruction)",
                                   "positive_float")  # fmt: skip
    hard_beta: float = _opt(0.3, "β: average the hinge over the ⌈βS⌉ hardest (reconstruction)",
                            "beta")  # fmt: skip
    adaptive: bool = _opt(False, "APA reconstruction: C_u = min(C, max(1, ⌊log2 n_u⌋))")
    lr: float = _opt(1e-3, "Adam learning rate", "positive_float")
    batch_size: int = _opt(256, "global batch of positive pairs (split over torchrun ranks)",
                           "positive_int")  # fmt: skip
    epochs: int = _opt(100, "training epochs (each resamples the negatives)", "positive_int")

    def __post_init__(self) -> None:
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if meta["choices"] is not None and value not in meta["choices"]:
                raise UserError(f"{f.name} must be one of {meta['choices']}, got {value!r}")
            if f.type in ("bool", bool) and not isinstance(value, bool):
                raise UserError(f"{f.name} must be true or false, got {value!r}")
            if meta["range"] is None:
                continue
            test, says = RANGES[meta["range"]]
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not (ok and test(value)):
                raise UserError(f"{f.name} must be {says}, got {value!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DPCMLConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
