"""Injection into timm ViTs, trainability, saving/loading, merging (U1, U6, U8, U9, M5 shape)."""

import copy
import json

import pytest
import timm
import torch

from snell import SnellConfig, SnellLinear, SnellModel, from_pretrained, get_snell_model
from snell.model import WEIGHTS_NAME

VIT_B_ADAPTER_PARAMS = {8: 1_327_104, 32: 5_308_416}


@pytest.mark.parametrize("r", [8, 32])
def test_vit_b_adapter_count(r):
    """U1: 72 adapters on ViT-B, r(n+m) each, totals 1,327,104 (r=8) and 5,308,416 (r=32)."""
    with torch.device("meta"):
        vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=100)
        model = get_snell_model(vit, SnellConfig(r=r))
    layers = list(model.snell_layers())
    assert sum(layer.splits for _, layer in layers) == 72
    n_adapter = sum(
        p.numel() for n, p in model.named_parameters() if ".snell_A." in n or ".snell_B." in n
    )
    assert n_adapter == VIT_B_ADAPTER_PARAMS[r]
    trainable, _ = model.get_nb_trainable_parameters()
    assert trainable == VIT_B_ADAPTER_PARAMS[r] + 76_900 + 768  # + head + cls_token


def test_placement_and_trainability(tiny_vit):
    model = get_snell_model(tiny_vit, SnellConfig(sparsity=0.5))
    names = [n for n, _ in model.snell_layers()]
    assert names == [
        f"blocks.{i}.{t}" for i in range(2) for t in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    ]
    layers = dict(model.snell_layers())
    assert layers["blocks.0.attn.qkv"].splits == 3 and layers["blocks.0.mlp.fc1"].splits == 1
    assert layers["blocks.0.attn.proj"].dropout_p == 0.0
    assert layers["blocks.0.mlp.fc2"].dropout_p == 0.1
    trainable = {n for n, p in model.base_model.named_parameters() if p.requires_grad}
    assert {"cls_token", "head.weight", "head.bias"} <= trainable
    assert "pos_embed" not in trainable and "patch_embed.proj.weight" not in trainable
    assert all("snell_A" in n or "snell_B" in n or n.startswith(("head", "cls")) for n in trainable)


def test_layers_to_transform_and_bad_targets(tiny_vit, vit_factory):
    model = get_snell_model(tiny_vit, SnellConfig(layers_to_transform=[1]))
    assert all(n.startswith("blocks.1.") for n, _ in model.snell_layers())
    with pytest.raises(ValueError, match=r"no nn\.Linear matches"):
        get_snell_model(vit_factory(), SnellConfig(target_modules=["nonexistent"]))


def test_no_index_stored_anywhere_on_vit_b(tmp_path):
    """U6: only small float tensors; no m x n buffer; the file is ≈ 5.62 MB."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=100)
    model = get_snell_model(vit, SnellConfig(r=8, sparsity=0.9))
    sd = model.adapter_state_dict()
    adapter = {k: v for k, v in sd.items() if ".snell_" in k}
    assert all(v.is_floating_point() for v in sd.values())
    assert max(v.numel() for v in adapter.values()) <= 8 * (768 + 3072)
    assert not any(b.numel() >= 768 * 768 for b in model.buffers())
    model.save_pretrained(tmp_path)
    size = (tmp_path / WEIGHTS_NAME).stat().st_size
    payload = 4 * (1_327_104 + 76_900 + 768 + 144)
    assert payload <= size <= payload + 64 * 1024


def test_optimizer_state_holds_no_mask(tiny_vit):
    model = get_snell_model(tiny_vit, SnellConfig(sparsity=0.9))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    opt.step()
    shapes = {tuple(p.shape) for p in model.parameters() if p.requires_grad}
    for state in opt.state.values():
        for v in state.values():
            assert v.ndim == 0 or tuple(v.shape) in shapes


def _saved_shapes(model, x):
    shapes = []

    def pack(t):
        base = t._base if t._base is not None else t
        if not isinstance(base, torch.nn.Parameter):  # frozen W0 (or its view) is no copy
            shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return shapes


def test_recompute_keeps_no_delta_sized_tensor(tiny_vit, vit_factory):
    """M5 (shape part): with recompute no saved tensor has an adapted (n, m) / (m, n) shape."""
    x = torch.rand(2, 3, 32, 32)
    model = get_snell_model(tiny_vit, SnellConfig(sparsity=0.9)).train()
    dims = {(48, 48), (48, 144), (144, 48), (48, 192), (192, 48)}
    assert not dims & set(_saved_shapes(model, x))
    off = get_snell_model(vit_factory(), SnellConfig(sparsity=0.9, recompute=False)).train()
    assert dims & set(_saved_shapes(off, x))


def _trained_copy(make_vit, **cfg):
    base = make_vit()
    model = get_snell_model(copy.deepcopy(base), SnellConfig(**cfg))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.rand(4, 3, 32, 32)).logsumexp(1).mean().backward()
        opt.step()
    return base, model.eval()


def test_save_load_roundtrip_gives_identical_logits(tmp_path, vit_factory):
    """U9: save -> fresh base model -> from_pretrained: bit-identical logits."""
    base, model = _trained_copy(vit_factory, sparsity=0.5)
    x = torch.rand(3, 3, 32, 32)
    ref = model(x)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "SNELL" and cfg["sparsity"] == 0.5
    loaded = from_pretrained(copy.deepcopy(base), tmp_path)
    assert isinstance(loaded, SnellModel)
    assert torch.equal(loaded(x), ref)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_load_into_wrong_model_is_a_clear_error(tmp_path, vit_factory):
    _, model = _trained_copy(vit_factory)
    model.save_pretrained(tmp_path)
    other = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=2, num_classes=5
    )
    with pytest.raises(ValueError, match="do not fit"):
        from_pretrained(other, tmp_path)
    with pytest.raises(FileNotFoundError):
        from_pretrained(vit_factory(), tmp_path / "missing")


def test_merge_and_unload_matches_adapter_model(vit_factory):
    """U8 on a model: merged plain ViT gives the adapter model's eval logits."""
    _, model = _trained_copy(vit_factory, sparsity=0.5)
    x = torch.rand(3, 3, 32, 32)
    ref = model(x)
    with model.disable_adapter():
        frozen = model(x)
    assert (frozen - ref).abs().max() > 1e-6
    model.merge_adapter()
    torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=0)
    model.unmerge_adapter()
    plain = model.merge_and_unload()
    assert not any(isinstance(m, SnellLinear) for m in plain.modules())
    torch.testing.assert_close(plain(x), ref, atol=1e-5, rtol=0)


def test_print_trainable_parameters(tiny_vit, capsys):
    model = get_snell_model(tiny_vit, SnellConfig())
    model.print_trainable_parameters()
    trainable, total = model.get_nb_trainable_parameters()
    assert f"trainable params: {trainable:,d} || all params: {total:,d}" in capsys.readouterr().out


def test_config_validation():
    with pytest.raises(ValueError, match="kernel"):
        SnellConfig(kernel="gaussian")
    with pytest.raises(ValueError, match="sparsity"):
        SnellConfig(sparsity=1.0)
    with pytest.raises(ValueError, match="multiple of num_pieces"):
        SnellConfig(r=7)
    assert SnellConfig(num_pieces=4, r=8).alpha == (0.1, -0.1, 0.1, -0.1)
