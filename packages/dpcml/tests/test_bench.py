"""The bench's official-style baseline scores the same as the fast path."""

import torch

from dpcml import DPCML, DPCMLConfig
from dpcml.bench import _official_predict


def test_official_predict_equals_full_scores():
    torch.manual_seed(0)
    model = DPCML(60, 45, DPCMLConfig(dim=6, n_vectors=3))
    model.project_users_()
    users = torch.arange(0, 60, 2)
    torch.testing.assert_close(_official_predict(model, sub_chunk=7)(users),
                               model.full_scores(users), rtol=1e-5, atol=1e-5)  # fmt: skip
