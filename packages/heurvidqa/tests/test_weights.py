"""ALPRO checkpoint keys → this package's, and weight loading."""

import torch

from heurvidqa.model import AlproStudent
from heurvidqa.weights import alpro_to_heurvidqa, init_temporal_from_spatial, load_student_weights

# facebookresearch/TimeSformer names (as ALPRO stores them under visual_encoder.model.), by hand
FB_GLOBAL = ["cls_token", "pos_embed", "time_embed", "patch_embed.proj.weight",
             "patch_embed.proj.bias", "norm.weight", "norm.bias"]  # fmt: skip
FB_BLOCK = [f"{m}.{p}" for m in ("norm1", "norm2", "temporal_norm1", "attn.qkv", "attn.proj",
                                 "temporal_attn.qkv", "temporal_attn.proj", "temporal_fc",
                                 "mlp.fc1", "mlp.fc2") for p in ("weight", "bias")]  # fmt: skip


def test_alpro_timesformer_keys_cover_the_hf_model(tiny_cfg):
    s = AlproStudent(tiny_cfg)
    own = {k for k in s.state_dict() if k.startswith("video.timesformer.")}
    names = FB_GLOBAL + [f"blocks.{i}.{k}" for i in range(tiny_cfg.video_layers) for k in FB_BLOCK]
    alpro = {f"visual_encoder.model.{k}": torch.zeros(1) for k in names}
    alpro["text_encoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(1)
    alpro["text_encoder.bert.pooler.dense.weight"] = torch.zeros(1)
    alpro["temp"] = torch.tensor(0.05)
    mapped, unplaced = alpro_to_heurvidqa(alpro)
    assert {k for k in mapped if k.startswith("video.")} == own
    assert "bert.embeddings.word_embeddings.weight" in mapped and "temp.raw" in mapped
    assert unplaced == ["text_encoder.bert.pooler.dense.weight"]


def test_load_roundtrip_and_temporal_init(tiny_cfg, tmp_path):
    a, b = AlproStudent(tiny_cfg, num_answers=3), AlproStudent(tiny_cfg, num_answers=5)
    torch.save({"kind": "student", "state_dict": a.state_dict()}, tmp_path / "a.pt")
    rep = load_student_weights(b, tmp_path / "a.pt")
    assert rep["shape_skipped"] == ["qa_head.2.weight", "qa_head.2.bias"]
    torch.testing.assert_close(b.video.timesformer.embeddings.cls_token,
                               a.video.timesformer.embeddings.cls_token)  # fmt: skip
    init_temporal_from_spatial(b)
    layer = b.video.timesformer.encoder.layer[0]
    torch.testing.assert_close(layer.temporal_attention.attention.qkv.weight,
                               layer.attention.attention.qkv.weight)  # fmt: skip
