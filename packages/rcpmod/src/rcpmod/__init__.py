"""RCPMOD: Regularized Contrastive Partial Multi-view Outlier Detection (Wang et al., ACM MM 2024).

One autoencoder per view, trained pairwise over the view pairs with an outlier-aware contrastive
loss (a memory bank of potential outliers as extra negatives), a neighbour-alignment contrastive
loss and a spreading regulariser; missing views are imputed in latent space by Cross-view
Relation Transfer; the score fuses a whole-dataset NT-Xent consistency score with the
reconstruction error. A PyOD / scikit-learn shaped detector.
"""

from rcpmod.detector import RCPMOD, check_views
from rcpmod.inject import OUTLIER_TYPES, Injection, inject_outliers, minmax_global
from rcpmod.losses import koleo, nt_xent, nt_xent_per_row, reconstruction, spreading_weight, triplet
from rcpmod.mask import make_missing_mask
from rcpmod.neighbors import crt_impute, knn_search, neighbor_lists
from rcpmod.nets import ViewAutoencoder
from rcpmod.presets import PRESETS
from rcpmod.score import (
    attribute_score,
    consistency_score,
    consistency_score_against,
    consistency_score_dense,
    fuse,
    minmax,
)

__version__ = "0.1.0"

__all__ = [
    "OUTLIER_TYPES",
    "PRESETS",
    "RCPMOD",
    "Injection",
    "ViewAutoencoder",
    "__version__",
    "attribute_score",
    "check_views",
    "consistency_score",
    "consistency_score_against",
    "consistency_score_dense",
    "crt_impute",
    "fuse",
    "inject_outliers",
    "knn_search",
    "koleo",
    "make_missing_mask",
    "minmax",
    "minmax_global",
    "neighbor_lists",
    "nt_xent",
    "nt_xent_per_row",
    "reconstruction",
    "spreading_weight",
    "triplet",
]
