"""The student and prompter against brute-force references: token order, split BERT, VTC."""

import torch
import torch.nn.functional as F

from heurvidqa.model import AlproStudent, DualEncoder, vtc_loss


def test_timesformer_token_order_is_patch_major(tiny_cfg):
    """Token 1 + n*T + t of the embeddings is patch n of frame t (pitfall 4)."""
    s = AlproStudent(tiny_cfg)
    emb = s.video.timesformer.embeddings
    with torch.no_grad():
        emb.position_embeddings.zero_()
        emb.time_embeddings.zero_()
        emb.cls_token.zero_()
        px = torch.randn(2, tiny_cfg.num_frames, 3, 64, 64)
        out = emb(px)
        b, t = px.shape[:2]
        per_frame = emb.patch_embeddings.projection(px.flatten(0, 1)).flatten(2).transpose(1, 2)
        per_frame = per_frame.view(b, t, -1, per_frame.shape[-1])  # (B, T, N, D)
    n_patches = per_frame.shape[2]
    for n in (0, 5, n_patches - 1):
        for f in range(t):
            torch.testing.assert_close(out[:, 1 + n * t + f], per_frame[:, f, n])


def test_video_pooling_is_time_mean(tiny_cfg):
    s = AlproStudent(tiny_cfg).eval()
    px = torch.randn(2, tiny_cfg.num_frames, 3, 64, 64)
    with torch.no_grad():
        v = s.video(px)
        raw = s.video.timesformer(pixel_values=px).last_hidden_state
    t = tiny_cfg.num_frames
    assert v["v"].shape == (2, 1 + 16, tiny_cfg.video_hidden)
    torch.testing.assert_close(v["v"][:, 3], raw[:, 1 + 2 * t : 1 + 3 * t].mean(1))  # patch 2
    torch.testing.assert_close(v["tokens"][:, 4, 1], raw[:, 1 + 4 * t + 1])


def test_text_and_fusion_split_equal_full_bert_layers(tiny_cfg, tokenizer):
    s = AlproStudent(tiny_cfg).eval()
    tok = tokenizer(["what color is it?", "a red circle moves"], padding=True, return_tensors="pt")
    v = torch.randn(2, 17, tiny_cfg.video_hidden)
    with torch.no_grad():
        text = s.encode_text(tok.input_ids, tok.attention_mask)
        fused = s.fuse(text, tok.attention_mask, v)
        # reference: one pass of all layers, the visual tokens entering at layer text_layers
        h = s.bert.embeddings(input_ids=tok.input_ids)
        L = h.shape[1]
        m = (1.0 - tok.attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in s.bert.encoder.layer[: tiny_cfg.text_layers]:
            h = layer(h, m)
        h = torch.cat([h, s.video_map(v)], 1)
        m2 = torch.cat([tok.attention_mask, torch.ones(2, 17, dtype=torch.long)], 1)
        m2 = (1.0 - m2[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in s.bert.encoder.layer[tiny_cfg.text_layers :]:
            h = layer(h, m2)
    assert fused.shape == (2, L + 17, s.hidden)
    torch.testing.assert_close(fused, h)
    assert len(s.fusion_layers()) == 4 - tiny_cfg.text_layers


def test_vtc_loss_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    ev = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    ew = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    tau = torch.tensor(0.07)
    s = (ev @ ew.t() / tau).tolist()
    import math

    row = -sum(s[i][i] - math.log(sum(math.exp(x) for x in s[i])) for i in range(5)) / 5
    col = -sum(s[i][i] - math.log(sum(math.exp(s[j][i]) for j in range(5))) for i in range(5)) / 5
    assert abs(vtc_loss(ev, ew, tau).item() - 0.5 * (row + col)) < 1e-5


def test_temperature_clamped(tiny_cfg):
    s = AlproStudent(tiny_cfg)
    assert abs(s.temp().item() - 0.07) < 1e-7
    with torch.no_grad():
        s.temp.raw.fill_(5.0)
    assert s.temp().item() == 0.5
    s.temp.clamp_()
    assert s.temp.raw.item() == 0.5
    with torch.no_grad():
        s.temp.raw.fill_(-1.0)
    assert abs(s.temp().item() - 0.001) < 1e-9


def test_multiple_choice_repeats_visual_rows(tiny_cfg, tokenizer):
    s = AlproStudent(tiny_cfg).eval()
    px = torch.randn(2, tiny_cfg.num_frames, 3, 64, 64)
    qs = ["what color?"] * 10
    cs = ["red", "blue", "green", "white", "yellow"] * 2
    tok = tokenizer(qs, cs, padding=True, return_tensors="pt")
    with torch.no_grad():
        fused, _ = s.qa_forward(px, tok.input_ids, tok.attention_mask, num_candidates=5)
        scores = s.qa_logits(fused, 5)
        # candidate 3 of sample 1, scored alone against sample 1's video
        one, _ = s.qa_forward(px[1:2], tok.input_ids[8:9], tok.attention_mask[8:9])
    assert scores.shape == (2, 5)
    torch.testing.assert_close(scores[1, 3], s.mc_head(one[:, 0])[0, 0], atol=1e-5, rtol=1e-5)


def test_region_and_window_features_brute_force(tiny_cfg):
    s = AlproStudent(tiny_cfg)
    fused = torch.randn(2, 6 + 17, s.hidden)
    region = torch.zeros(2, 16)
    region[0, [0, 1, 4]] = 1
    region[1, [15]] = 1
    f = s.region_features(fused, 6, region)
    torch.testing.assert_close(f[0], fused[0, [7, 8, 11]].mean(0))  # skips the CLS at 6
    torch.testing.assert_close(f[1], fused[1, 6 + 1 + 15])
    tokens = torch.randn(2, 16, tiny_cfg.num_frames, tiny_cfg.video_hidden)
    win = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]])
    w = s.window_features({"tokens": tokens}, win)
    ref = s.video_map(tokens[1, :, 2:4]).mean((0, 1))
    torch.testing.assert_close(w[1], ref)


def test_prompter_text_tower_frozen(tiny_cfg):
    from heurvidqa.model import load_text_model

    p = DualEncoder(tiny_cfg, text_model=load_text_model("tiny"))
    p.train()
    assert not p.text.training and all(not q.requires_grad for q in p.text.parameters())
    assert all(q.requires_grad for q in p.video.parameters())
