"""Shared fixtures: a tiny timm ViT (same module names as ViT-B) for fast model-level tests."""

import pytest
import timm
import torch


def make_tiny_vit(seed: int = 0, num_classes: int = 5):
    torch.manual_seed(seed)
    return timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=2, num_classes=num_classes
    )


@pytest.fixture
def tiny_vit():
    return make_tiny_vit()


@pytest.fixture
def vit_factory():
    """The tiny-ViT constructor itself, for tests that need several identical bases."""
    return make_tiny_vit
