"""DSA: Decorrelating Structure via Adapters (Wu, Pang, Huang): S structure-diverse heads on one
backbone, trained supervised (rotating blank head) or with FreeMatch (ensemble pseudo-labels)."""

from dsa_ensemble.config import DSAConfig
from dsa_ensemble.data import (
    ImageSet,
    add_label_noise,
    corrupt,
    digits_splits,
    load_cifar,
    load_dataset,
    load_image_folder,
    load_labeled_split,
    ssl_split,
)
from dsa_ensemble.heads import (
    ACTIVATIONS,
    AdapterStack,
    DSAHead,
    HeadOutput,
    MultiHeadEnsemble,
    SingleHead,
)
from dsa_ensemble.losses import (
    SATState,
    count_threshold,
    ensemble_loss,
    ensemble_pseudo_label,
    feature_decorrelation_loss,
    max_correlation_loss,
    saf_loss,
    supervised_loss,
)
from dsa_ensemble.metrics import ensemble_metrics, pairwise_diversity
from dsa_ensemble.model import DSAModel, SmallCNN, WideResNet, build_backbone, wrn28_2
from dsa_ensemble.train import FitResult, build_model, fit, predict

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "AdapterStack",
    "DSAConfig",
    "DSAHead",
    "DSAModel",
    "FitResult",
    "HeadOutput",
    "ImageSet",
    "MultiHeadEnsemble",
    "SATState",
    "SingleHead",
    "SmallCNN",
    "WideResNet",
    "__version__",
    "add_label_noise",
    "build_backbone",
    "build_model",
    "corrupt",
    "count_threshold",
    "digits_splits",
    "ensemble_loss",
    "ensemble_metrics",
    "ensemble_pseudo_label",
    "feature_decorrelation_loss",
    "fit",
    "load_cifar",
    "load_dataset",
    "load_image_folder",
    "load_labeled_split",
    "max_correlation_loss",
    "pairwise_diversity",
    "predict",
    "saf_loss",
    "ssl_split",
    "supervised_loss",
    "wrn28_2",
]
