"""HeurVidQA: entity and action prompters give fine-grained heuristics to an ALPRO-style
video-language model for VideoQA (Yu et al., TCSVT 2024; no public code: a reconstruction).

Modules: :mod:`~heurvidqa.model` (student, prompters, VTC), :mod:`~heurvidqa.heuristics` (crop
boxes, windows, soft labels, losses), :mod:`~heurvidqa.vocab` (training-split vocabularies),
:mod:`~heurvidqa.data` (MSRVTT-QA / MSVD-QA / NExT-QA loaders), :mod:`~heurvidqa.synthetic`
(MovingShapes-QA), :mod:`~heurvidqa.train` (loops), :mod:`~heurvidqa.pipeline`, ``cli``.
"""

from heurvidqa.config import (
    HeuristicConfig,
    ModelConfig,
    TrainConfig,
    model_config,
    reconstructions,
)
from heurvidqa.data import CaptionSet, FrameSource, MsrvttQA, NextQA, QAExample, qa_batch
from heurvidqa.heuristics import (
    Heuristics,
    build_prompt_bank,
    crop_video,
    region_mask,
    sample_crop_boxes,
    sample_windows,
    soft_cross_entropy,
    soft_labels,
)
from heurvidqa.model import AlproStudent, DualEncoder, VideoEncoder, load_text_model, load_tokenizer
from heurvidqa.train import evaluate_qa, finetune_qa, pretrain_student, train_prompter
from heurvidqa.vocab import action_prompts, entity_prompts, mine_vocabularies
from heurvidqa.weights import alpro_to_heurvidqa, load_student_weights

__version__ = "0.1.0"

__all__ = [
    "AlproStudent", "CaptionSet", "DualEncoder", "FrameSource", "HeuristicConfig", "Heuristics",
    "ModelConfig", "MsrvttQA", "NextQA", "QAExample", "TrainConfig", "VideoEncoder",
    "action_prompts", "alpro_to_heurvidqa", "build_prompt_bank", "crop_video", "entity_prompts",
    "evaluate_qa", "finetune_qa", "load_student_weights", "load_text_model", "load_tokenizer",
    "mine_vocabularies", "model_config", "pretrain_student", "qa_batch", "reconstructions",
    "region_mask", "sample_crop_boxes", "sample_windows", "soft_cross_entropy", "soft_labels",
    "train_prompter",
]  # fmt: skip
