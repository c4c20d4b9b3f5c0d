import math

import numpy as np
import pytest
import torch
from torch import nn

from aucseg import TensorSegmentation, TMemoryBank, TrainConfig, build_segmenter, group_scores
from aucseg.train import batch_coverage, evaluate, poly_lr, train
from labcore.metrics import ConfusionMatrix


def test_group_miou_against_a_hand_count():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 0]])
    cm = ConfusionMatrix(4).update(pred, target)
    # class 0: TP 1, FP 1 (a 2 predicted 0), FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3;
    # class 2: TP 2, FN 1 -> 2/3; class 3 never occurs -> nan, left out
    s = group_scores(cm, {"head": [2], "tail": [0, 3]})
    assert s["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert s["head_mIoU"] == pytest.approx(2 / 3)
    assert s["tail_mIoU"] == pytest.approx(1 / 3)
    assert s["aAcc"] == pytest.approx(5 / 7)


def test_evaluate_is_dataset_level_not_per_image():
    class Oracle(nn.Module):  # logits that put class 0 everywhere on image 0, truth on image 1
        def forward(self, x):
            lab = x[:, 0].round().long()
            out = torch.nn.functional.one_hot(lab, 3).movedim(-1, 1).float()
            return out

    labels = torch.tensor([[[1, 1], [1, 1]], [[1, 2], [2, 2]]])
    images = torch.stack([torch.zeros(2, 2), labels[1].float()])[:, None].expand(-1, 3, -1, -1)
    ds = torch.utils.data.TensorDataset(images.contiguous(), labels)
    cm = evaluate(Oracle(), ds, 3, batch_size=1)
    # class 1: TP 1, FN 4 (4 px of image 0 predicted 0), union 5; class 2: 3/3; class 0: 0/4
    np.testing.assert_allclose(cm.iou(), [0.0, 1 / 5, 1.0])


def test_poly_schedule_with_warmup():
    cfg = TrainConfig(iters=100, lr=1.0, warmup_iters=10, warmup_ratio=0.1)
    assert poly_lr(0, cfg) == pytest.approx(0.1)
    assert poly_lr(50, cfg) == pytest.approx(0.5)
    assert poly_lr(99, TrainConfig(iters=100, lr=1.0, power=2.0)) == pytest.approx(1e-4)


def test_batch_coverage():
    lab = torch.tensor([[[0, 6], [255, 7]], [[8, 8], [1, 1]]])
    assert batch_coverage(lab, [6, 7, 8])
    assert not batch_coverage(lab, [6, 9])


def test_model_shapes_and_a_short_training_run_with_bank():
    torch.manual_seed(0)
    model = build_segmenter(5, "resnet18", channels=16)
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 5, 16, 16) and model.predict(x).shape == (2, 5, 64, 64)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 3, (8, 64, 64), generator=g).to(torch.uint8)
    labels[::4, 10:14, 10:14] = 4  # class 4 in two of the eight images
    bank = TMemoryBank(5, [4], p_sample=1.0, seed=0)
    ds = TensorSegmentation(images, labels, train=True, bank=bank)
    cfg = TrainConfig(iters=3, batch_size=2, w_auc=1.0)
    hist = train(model, ds, cfg, coverage_classes=[4])
    assert math.isfinite(hist["final_loss"]) and hist["final_auc"] > 0
    assert 0.0 <= hist["tail_coverage"] <= 1.0
    with pytest.raises(ValueError, match="cannot build backbone"):
        build_segmenter(5, "no_such_backbone_xyz")


def test_local_backbone_checkpoint_is_loaded(tmp_path):
    import timm

    ref = timm.create_model("resnet10t", pretrained=False)
    with torch.no_grad():
        ref.conv1[0].weight.fill_(0.25)
    torch.save(ref.state_dict(), tmp_path / "r10t.pth")
    model = build_segmenter(3, "resnet10t", checkpoint_path=str(tmp_path / "r10t.pth"))
    assert torch.all(model.backbone.conv1[0].weight == 0.25)


def test_loader_workers_draw_different_augmentations():
    images = torch.arange(16, dtype=torch.uint8).view(16, 1, 1, 1).expand(16, 3, 4, 4).contiguous()
    labels = torch.zeros(16, 4, 4, dtype=torch.uint8)
    labels[:, :, 0] = 1  # a flip moves class 1 to the last column
    ds = TensorSegmentation(images, labels, train=True, seed=0)
    flips = []
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2)
    for _, lab in loader:
        flips.append((lab[:, 0, 0] == 0).tolist())
    assert flips[0] != flips[1]  # two workers, two streams
