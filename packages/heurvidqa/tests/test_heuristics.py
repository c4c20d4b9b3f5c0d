"""T4: pseudo-labels, ignore rule, grid boxes and region masks, frozen prompters."""

import numpy as np
import pytest
import torch

from heurvidqa.config import HeuristicConfig, TrainConfig
from heurvidqa.heuristics import (
    Heuristics,
    build_prompt_bank,
    crop_video,
    region_mask,
    sample_crop_boxes,
    sample_windows,
    soft_cross_entropy,
    soft_labels,
)
from heurvidqa.model import AlproStudent, DualEncoder, load_text_model


@pytest.fixture
def prompter(tiny_cfg):
    torch.manual_seed(0)
    return DualEncoder(tiny_cfg, text_model=load_text_model("tiny")).eval()


def test_soft_labels_rows_sum_to_one_and_ignore_is_max_rule(prompter, tiny_cfg):
    px = torch.randn(6, tiny_cfg.num_frames, 3, 64, 64)
    bank = torch.nn.functional.normalize(torch.randn(30, 256), dim=-1)
    q, ignored = soft_labels(prompter, px, bank, 0.2)
    assert torch.allclose(q.sum(-1), torch.ones(6), atol=1e-5)
    torch.testing.assert_close(ignored, q.max(-1).values < 0.2)
    # a peaked bank: label 7 dominates -> kept although its argmax index (7) is >= 0.2, and a
    # flat bank -> ignored although argmax index 0 < 0.2 would keep it under ALPRO's bug
    feats = prompter.video_features(px)
    peaked = torch.zeros(30, 256)
    peaked[7] = feats[0] * 20
    q2, ign2 = soft_labels(prompter, px[:1], peaked, 0.2)
    assert int(q2.argmax()) == 7 and q2.max() > 0.2 and not ign2.item()
    q3, ign3 = soft_labels(prompter, px[:1], torch.zeros(30, 256), 0.2)
    assert int(q3.argmax()) == 0 and ign3.item()  # the buggy rule (0 < 0.2) would keep it


def test_prompt_bank_is_mean_of_normalised_not_renormalised(prompter, tokenizer):
    bank = build_prompt_bank(prompter, tokenizer, ["red circle", "square"], "entity")
    from heurvidqa.vocab import entity_prompts

    tok = tokenizer(entity_prompts("square"), padding=True, return_tensors="pt")
    with torch.no_grad():
        f = prompter.text_features(tok.input_ids, tok.attention_mask)
    torch.testing.assert_close(bank[1], f.mean(0))
    assert bank.norm(dim=-1).max() < 1 - 1e-4  # an average of unit vectors, not renormalised


def test_crop_boxes_on_grid_with_area_and_aspect():
    cfg = HeuristicConfig()
    rng = np.random.default_rng(0)
    for grid in (4, 14):
        boxes = sample_crop_boxes(500, grid, cfg, rng)
        h = boxes[:, 2] - boxes[:, 0]
        w = boxes[:, 3] - boxes[:, 1]
        area = (h * w).float() / grid**2
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= grid).all()
        assert (area >= 0.3 - 1e-6).all() and (area <= 0.5 + 1e-6).all()
        asp = w.float() / h.float()
        assert (asp >= 0.3 - 1e-6).all() and (asp <= 3.33 + 1e-6).all()
        assert len({tuple(b) for b in boxes.tolist()}) > 5


def test_region_mask_matches_cropped_pixels():
    boxes = torch.tensor([[1, 0, 3, 3], [0, 2, 4, 4]])
    m = region_mask(boxes, 4)
    px = torch.ones(2, 2, 3, 64, 64)
    crop = crop_video(px, boxes, 16)
    # the patch mask equals "any pixel of this patch survived the crop", same in every frame
    alive = crop[:, :, 0].unflatten(2, (4, 16)).unflatten(4, (4, 16)).amax((3, 5))  # (B,T,4,4)
    for t in range(2):
        torch.testing.assert_close(alive[:, t].flatten(1), m)
    assert m[0].sum() == 6 and m[1].sum() == 8
    assert m[0].view(4, 4)[1:3, 0:3].all() and m[0].view(4, 4)[0].sum() == 0


def test_windows_are_contiguous_halves():
    rng = np.random.default_rng(0)
    w = sample_windows(50, 8, "random", rng)
    assert w.shape == (50, 4) and (w.diff(dim=1) == 1).all()
    assert (w[:, 0] >= 0).all() and (w[:, -1] <= 7).all() and len(set(w[:, 0].tolist())) > 2
    assert sample_windows(2, 8, "head", rng).tolist() == [[0, 1, 2, 3]] * 2
    assert sample_windows(1, 8, "tail", rng).tolist() == [[4, 5, 6, 7]]


def test_soft_ce_brute_force_and_ignore():
    z = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
    q = torch.tensor([[0.2, 0.7, 0.1], [1.0, 0.0, 0.0]])
    ls = torch.log_softmax(z, -1)
    per = -(q * ls).sum(-1)
    assert torch.allclose(soft_cross_entropy(z, q), per.mean())
    assert torch.allclose(soft_cross_entropy(z, q, torch.tensor([False, True])), per[1])
    assert soft_cross_entropy(z, q, torch.tensor([False, False])).item() == 0.0


def test_prompters_unchanged_and_gradient_free_after_training_step(tiny_cfg, tokenizer):
    from heurvidqa.train import qa_losses

    torch.manual_seed(0)
    text = load_text_model("tiny")
    ep = DualEncoder(tiny_cfg, text_model=text)
    ap = DualEncoder(tiny_cfg, text_model=text)
    heur = Heuristics(ep, ap, torch.randn(5, 256), torch.randn(6, 256), HeuristicConfig(),
                      16, 4)  # fmt: skip
    heur.train()
    assert not ep.training and not ap.training
    checksum = {k: v.clone() for k, v in heur.state_dict().items()}
    student = AlproStudent(tiny_cfg, num_answers=3, num_entities=5, num_actions=6)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-2)
    tok = tokenizer(["what color?"] * 3, return_tensors="pt")
    batch = {
        "pixels": torch.randn(3, 4, 3, 64, 64),
        "ids": tok.input_ids,
        "mask": tok.attention_mask,
        "labels": torch.tensor([0, 1, 2]),
        "num_candidates": 0,
    }
    h = heur(batch["pixels"], np.random.default_rng(0))
    losses = qa_losses(student, batch, h, HeuristicConfig(ignore_below=0.0), True, True)
    (losses["qa"] + losses["entity"] + losses["action"]).backward()
    opt.step()
    assert losses["entity"].item() > 0 and losses["action"].item() > 0
    assert all(p.grad is None for p in heur.parameters())
    for k, v in heur.state_dict().items():
        assert torch.equal(v, checksum[k]), k
    assert student.entity_head[0].weight.grad is not None


def test_finetune_keeps_prompters_frozen(tiny_cfg, tokenizer, shapes_root):
    from heurvidqa.data import FrameSource
    from heurvidqa.pipeline import load_movingshapes, mine_train_vocab
    from heurvidqa.train import finetune_qa

    data = load_movingshapes(shapes_root)
    vocab = mine_train_vocab(data, HeuristicConfig(min_count=1))
    text = load_text_model("tiny")
    ep, ap = DualEncoder(tiny_cfg, text_model=text), DualEncoder(tiny_cfg, text_model=text)
    from heurvidqa.pipeline import make_heuristics

    heur = make_heuristics(ep, ap, vocab, tokenizer, HeuristicConfig(), tiny_cfg)
    before = {k: v.clone() for k, v in heur.state_dict().items()}
    student = AlproStudent(tiny_cfg, len(data.ans2label), len(vocab["entities"]),
                           len(vocab["actions"]))  # fmt: skip
    h = finetune_qa(student, data.oe["train"], FrameSource(64), tokenizer,
                    TrainConfig(steps=2, batch_size=4), "cpu", heuristics=heur,
                    use_entity=True, use_action=True)  # fmt: skip
    assert len(h.losses["action"]) == 2
    assert all(torch.equal(v, before[k]) for k, v in heur.state_dict().items())
