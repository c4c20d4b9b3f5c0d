"""AUCSeg: a pixel-level AUC loss and a tail-class memory bank for long-tailed segmentation.

Public API: :class:`AUCLoss` / :func:`auc_loss` (closed-form one-vs-one AUC over sigmoid scores),
:class:`SegmentationLoss` (w_auc·AUC + CE), :class:`TMemoryBank` (per-sample transform), the
folder-layout readers, the synthetic long-tailed scenes, a timm-backed segmenter and a training
loop.
"""

from aucseg.bank import BankEntry, TMemoryBank
from aucseg.classes import (
    NUM_CLASSES,
    OFFICIAL_SMALL_INDEX,
    class_groups,
    select_tail_classes,
    small_index_preset,
)
from aucseg.data import (
    LAYOUTS,
    FolderSegmentation,
    TensorSegmentation,
    find_pairs,
    pixel_counts,
    read_label,
)
from aucseg.loss import AUCLoss, SegmentationLoss, auc_loss
from aucseg.model import FPNSegmenter, build_segmenter
from aucseg.synthetic import make_scenes, make_synthetic
from aucseg.train import TrainConfig, evaluate, group_scores, train

__version__ = "0.2.0"

__all__ = [
    "LAYOUTS",
    "NUM_CLASSES",
    "OFFICIAL_SMALL_INDEX",
    "AUCLoss",
    "BankEntry",
    "FPNSegmenter",
    "FolderSegmentation",
    "SegmentationLoss",
    "TMemoryBank",
    "TensorSegmentation",
    "TrainConfig",
    "__version__",
    "auc_loss",
    "build_segmenter",
    "class_groups",
    "evaluate",
    "find_pairs",
    "group_scores",
    "make_scenes",
    "make_synthetic",
    "pixel_counts",
    "read_label",
    "select_tail_classes",
    "small_index_preset",
    "train",
]
