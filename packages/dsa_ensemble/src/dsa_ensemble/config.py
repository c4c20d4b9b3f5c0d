"""Hyperparameters of a DSA run as plain, serialisable data (one source of truth for the CLI)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from labcore.cli import UserError

__all__ = ["HELP", "DSAConfig"]

_DEFAULT_WIDTHS = "512,1024,1024,512"
_CHOICES = {
    "head_type": ("single", "mhe", "cbe", "dsa"),
    "head_bn": ("per_head", "shared"),
    "pseudo_label": ("code", "masked"),
    "saf_sign": ("usb", "code"),
    "ensemble": ("mean", "agreement"),
    "strong_aug": ("noise_erase", "randaugment"),
}


@dataclass
class DSAConfig:
    """DSA hyperparameters. Defaults: the official CIFAR-10 recipe (WRN-28-2, S=5, SGD 0.03).

    ``lambda_fd=None`` means "1 for CBE, else 0" (the official scripts); the SSL terms apply only
    to ``train --ssl``. ``adapter_widths`` is a comma list of hidden widths before the +10s offset.
    """

    backbone: str = "wrn28_2"  # wrn28_2 | wrn28_8 | small_cnn | any timm model name
    head_type: str = "dsa"  # single | mhe | cbe | dsa
    heads: int = 5  # S
    head_bn: str = "per_head"  # per_head (default here) | shared (official code, collapses eval)
    adapter_widths: str = "512,1024,1024,512"  # official classification adapter
    split_factor: float = 0.1  # m = floor(split_factor * C)
    noise_factor: float = 0.2  # perturbation strength (0 = off)
    perturb_prob: float = 0.5  # per head per step
    perturb_clamp: bool = True  # clamp perturbed features to [0, 1] (official)
    scheme_init: bool = True  # per-head init schemes s mod 5
    expand: bool = True  # False: the pose variant (channel masks, no expansion)
    adapter_residual: bool = False  # deviation, off in the official code
    bn_momentum: float = 0.001  # backbone and head BN momentum (official 0.001)
    blank_num: int = 1  # rotating blank heads per step (pose: 2)
    lambda_fd: float | None = None  # feature decorrelation weight (None: 1 for cbe, else 0)
    ensemble: str = "mean"  # reported prediction: mean softmax | agreement (code option)
    epochs: int = 200
    steps_per_epoch: int = 0  # 0: one pass over the labelled set (SL); SSL default 1024
    batch_size: int = 64  # global labelled batch (SL 64, SSL 32)
    lr: float = 0.03
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # no decay on bias and BN
    cosine_cycles: float = 7 / 16
    ema_decay: float = 0.999  # EMA model used for evaluation (0 = off)
    # FreeMatch SSL (train --ssl)
    mu: int = 7  # unlabeled batch = mu * batch_size
    sat_ema: float = 0.999  # SAT EMA (the code reuses ema_decay)
    taut_alpha: float = 0.9  # DSA's threshold multiplier (USB FreeMatch: 1.0)
    lambda_saf: float = 0.05  # 0.01 for CIFAR-100 @ 400 labels
    lambda_ens: float = 1.0
    lambda_mc: float = 1.0
    lambda_fm: float = 0.0  # FreeMatch's own per-head unlabeled loss (off in DSA; 1 for baseline)
    ensemble_warmup: int = 30  # iterations with the labelled loss only
    count_thr_min: int = 2
    count_thr_max: int = 4
    count_thr_rampup: int = 50  # epochs
    pseudo_label: str = "code"  # code: all-head sum / firing count | masked: firing heads only
    saf_sign: str = "usb"  # usb (cross-entropy) | code (the DSA repo's negated form)
    strong_aug: str = "noise_erase"  # noise_erase (spec digits) | randaugment (CIFAR)
    flip: bool = False  # horizontal flip in the weak view (True for CIFAR)
    shift: int = 1  # max pixel shift of the weak view (CIFAR: 4)

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        positive = ("heads", "epochs", "batch_size", "mu", "count_thr_rampup")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UserError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("lr", "split_factor"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)!r}")
        unit = ("perturb_prob", "ema_decay", "sat_ema", "momentum", "taut_alpha", "noise_factor")
        for name in unit:
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if self.blank_num < 0 or self.steps_per_epoch < 0 or self.ensemble_warmup < 0:
            raise UserError("blank_num, steps_per_epoch and ensemble_warmup must be >= 0")
        if self.head_type == "single" and self.heads != 1:
            self.heads = 1
        if self.head_type != "single" and self.heads < 2:
            raise UserError(f"head_type {self.head_type} needs heads >= 2")
        if self.blank_num >= self.heads and self.heads > 1:
            raise UserError(f"blank_num {self.blank_num} must be below heads {self.heads}")
        try:
            widths = self.widths()
        except ValueError:
            widths = ()
        if not widths or min(widths) < 1:
            raise UserError(f"adapter_widths must be a comma list of positive ints, "
                            f"got {self.adapter_widths!r}")  # fmt: skip
        if self.count_thr_min > self.count_thr_max:
            raise UserError("count_thr_min must be <= count_thr_max")

    def widths(self) -> tuple[int, ...]:
        return tuple(int(w) for w in str(self.adapter_widths).split(",") if w.strip())

    @property
    def fd_weight(self) -> float:
        if self.lambda_fd is None:
            return 1.0 if self.head_type == "cbe" else 0.0
        return float(self.lambda_fd)

    def head_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~dsa_ensemble.model.DSAModel`'s DSA/CBE head."""
        if self.head_type not in ("cbe", "dsa"):
            return {}
        widths = self.widths()
        if not self.expand and self.adapter_widths == _DEFAULT_WIDTHS:
            widths = None  # the pose adapter: d -> d + 10s -> d
        return {"head_bn": self.head_bn, "adapter_widths": widths,
                "split_factor": self.split_factor, "noise_factor": self.noise_factor,
                "perturb_prob": self.perturb_prob, "perturb_clamp": self.perturb_clamp,
                "scheme_init": self.scheme_init, "expand": self.expand,
                "adapter_residual": self.adapter_residual}  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DSAConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# one line of help per field, for the CLI built from the dataclass
HELP: dict[str, str] = {
    "backbone": "wrn28_2 | wrn28_8 | small_cnn | any timm model name",
    "head_type": "single | mhe | cbe | dsa",
    "heads": "S",
    "head_bn": "per_head (default here) | shared (official code, collapses eval)",
    "adapter_widths": "official classification adapter",
    "split_factor": "m = floor(split_factor * C)",
    "noise_factor": "perturbation strength (0 = off)",
    "perturb_prob": "per head per step",
    "perturb_clamp": "clamp perturbed features to [0, 1] (official)",
    "scheme_init": "per-head init schemes s mod 5",
    "expand": "False: the pose variant (channel masks, no expansion)",
    "adapter_residual": "deviation, off in the official code",
    "bn_momentum": "backbone and head BN momentum (official 0.001)",
    "blank_num": "rotating blank heads per step (pose: 2)",
    "lambda_fd": "feature decorrelation weight (None: 1 for cbe, else 0)",
    "ensemble": "reported prediction: mean softmax | agreement (code option)",
    "steps_per_epoch": "0: one pass over the labelled set (SL); SSL default 1024",
    "batch_size": "global labelled batch (SL 64, SSL 32)",
    "weight_decay": "no decay on bias and BN",
    "ema_decay": "EMA model used for evaluation (0 = off)",
    "mu": "unlabeled batch = mu * batch_size",
    "sat_ema": "SAT EMA (the code reuses ema_decay)",
    "taut_alpha": "DSA's threshold multiplier (USB FreeMatch: 1.0)",
    "lambda_saf": "0.01 for CIFAR-100 @ 400 labels",
    "lambda_fm": "FreeMatch's own per-head unlabeled loss (off in DSA; 1 for baseline)",
    "ensemble_warmup": "iterations with the labelled loss only",
    "count_thr_rampup": "epochs",
    "pseudo_label": "code: all-head sum / firing count | masked: firing heads only",
    "saf_sign": "usb (cross-entropy) | code (the DSA repo's negated form)",
    "strong_aug": "noise_erase (spec digits) | randaugment (CIFAR)",
    "flip": "horizontal flip in the weak view (True for CIFAR)",
    "shift": "max pixel shift of the weak view (CIFAR: 4)",
    "epochs": "training epochs",
    "lr": "SGD learning rate (official 0.03)",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum",
    "cosine_cycles": "cosine schedule cycles (official 7/16)",
    "lambda_ens": "weight of the ensemble pseudo-label loss L_ens",
    "lambda_mc": "weight of the max-correlation loss L_mc (labelled data)",
    "count_thr_min": "count threshold at the start of the ramp",
    "count_thr_max": "count threshold at the end of the ramp",
}
