"""DPCML: Diversity-Promoting Collaborative Metric Learning (Bao et al., NeurIPS 2022).

Each user owns C embedding vectors; an item's score is its squared distance to the closest one.
A diversity control term (DCRS) keeps a user's vectors neither collapsed nor scattered.
"""

from dpcml.config import DPCMLConfig
from dpcml.data import (
    FORMATS,
    Interactions,
    Split,
    from_pairs,
    load_interactions,
    split_per_user,
    write_users_dat,
)
from dpcml.losses import dcrs_code, dcrs_paper, hard_negative_hinge, min_sq_distance, triplet_hinge
from dpcml.model import DPCML, adaptive_vector_counts
from dpcml.ranking import (
    evaluate_ranking,
    naive_evaluate,
    per_user_metrics,
    recommend,
    summarise_metrics,
)
from dpcml.sampler import TripletSampler, sample_negatives
from dpcml.synthetic import MultiInterestData, interest_recall, make_multi_interest
from dpcml.train import FitResult, fit

__version__ = "0.2.0"

__all__ = [
    "DPCML",
    "FORMATS",
    "DPCMLConfig",
    "FitResult",
    "Interactions",
    "MultiInterestData",
    "Split",
    "TripletSampler",
    "__version__",
    "adaptive_vector_counts",
    "dcrs_code",
    "dcrs_paper",
    "evaluate_ranking",
    "fit",
    "from_pairs",
    "hard_negative_hinge",
    "interest_recall",
    "load_interactions",
    "make_multi_interest",
    "min_sq_distance",
    "naive_evaluate",
    "per_user_metrics",
    "recommend",
    "sample_negatives",
    "split_per_user",
    "summarise_metrics",
    "triplet_hinge",
    "write_users_dat",
]
