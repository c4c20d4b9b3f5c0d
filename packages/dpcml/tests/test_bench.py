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


def test_scaling_plot_is_written(tmp_path):
    from dpcml.bench import plot_evaluation_scaling

    ev = {"scaling": {"vectorised": {"users": [100, 1000], "seconds": [0.1, 1.0]},
                      "per_user_loop": {"users": [10, 100], "seconds": [0.2, 2.0]}}}  # fmt: skip
    path = plot_evaluation_scaling(tmp_path / "scaling.png", ev)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
