"""Tiny random-init diffusers backbones with the real topologies, built once per session."""

import pytest
import torch

torch.set_num_threads(1)  # a shared 2-core box: OpenMP spinning makes more threads slower


@pytest.fixture(scope="session")
def sd15():
    from diffusion_features.models import load_backbone

    return load_backbone("tiny-sd15")


@pytest.fixture(scope="session")
def sdxl():
    from diffusion_features.models import load_backbone

    return load_backbone("tiny-sdxl")


def hook_count(model) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_with_kwargs)
        for m in model.modules()
    )
