"""The stored-index baseline: masks chosen once, masked gradients, pruned weights never move."""

import pytest
import torch
from torch import nn

from snell.sparse_baseline import StoredIndexSparse, select_gradient_masks
from snell.training import make_optimizer

TARGETS = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]


def _loss(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def _batches(k=2):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.rand(4, 3, 32, 32, generator=g), torch.randint(0, 5, (4,), generator=g))
        for _ in range(k)
    ]


@pytest.mark.parametrize("index_format", ["bool", "int64"])
def test_masks_per_slice_and_pruned_weights_frozen(tiny_vit, index_format):
    model = tiny_vit
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    s = 0.9
    masks = select_gradient_masks(model, _loss, _batches(), TARGETS, s)
    assert set(masks) == {f"blocks.{i}.{t}" for i in range(2) for t in TARGETS}
    qkv = masks["blocks.0.attn.qkv"]
    for i in range(3):  # q, k and v each keep their own top 10%
        assert qkv[48 * i : 48 * (i + 1)].float().mean().item() == pytest.approx(1 - s, abs=1e-3)
    assert not any(p.grad is not None for p in model.parameters())
    before = {n: model.get_submodule(n).weight.detach().clone() for n in masks}
    sparse = StoredIndexSparse(model, masks, index_format=index_format)
    expected_bytes = sum(
        m.numel() if index_format == "bool" else 8 * int(m.sum()) for m in masks.values()
    )
    assert sparse.index_bytes() == expected_bytes
    opt = make_optimizer(model, 1e-2, 0.05, sparse.param_groups(0.05))
    for batch in _batches(3):
        opt.zero_grad()
        _loss(model, batch).backward()
        opt.step()
    for n, mask in masks.items():
        w = model.get_submodule(n).weight.detach()
        assert torch.equal(w[~mask], before[n][~mask])  # pruned entries never move
        assert (w[mask] != before[n][mask]).float().mean() > 0.9  # kept entries train
        assert model.get_submodule(n).weight.grad.shape == mask.shape  # full-size gradient


def test_bad_index_format(tiny_vit):
    with pytest.raises(ValueError, match="index_format"):
        StoredIndexSparse(tiny_vit, {}, index_format="csr")
