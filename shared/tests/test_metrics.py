import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from labcore.metrics import (
    ConfusionMatrix,
    expected_calibration_error,
    mean_iou,
    roc_auc,
    topk_accuracy,
)


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 500)
    s = rng.integers(0, 10, 500).astype(float)  # heavy ties
    assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    s = rng.normal(size=500) + y
    assert roc_auc(torch.tensor(s), torch.tensor(y)) == pytest.approx(roc_auc_score(y, s))


def test_roc_auc_edge_cases():
    assert roc_auc([0.1, 0.9], [0, 1]) == 1.0
    assert roc_auc([0.5, 0.5], [0, 1]) == 0.5
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_auc([0.1, 0.2], [1, 1])


def test_topk_accuracy_brute_force():
    torch.manual_seed(0)
    logits, y = torch.randn(200, 10), torch.randint(0, 10, (200,))
    top1, top5 = topk_accuracy(logits, y, topk=(1, 5))
    order = logits.argsort(1, descending=True)
    assert top1 == pytest.approx((order[:, 0] == y).float().mean().item())
    assert top5 == pytest.approx(
        np.mean([y[i].item() in order[i, :5].tolist() for i in range(200)])
    )


def test_miou_hand_count_and_ignore_index():
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 1]])
    cm = ConfusionMatrix(4).update(pred, target)
    # class 0: tp 1, fp 1 (the 2 predicted as 0), fn 1 -> 1/3; class 1: tp 3, fp 1, fn 0 -> 3/4;
    # class 2: tp 1, fn 1 -> 1/2; class 3 absent -> nan; the 255 pixel is ignored.
    np.testing.assert_allclose(cm.iou(), [1 / 3, 3 / 4, 1 / 2, np.nan])
    assert cm.miou() == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert cm.matrix.sum() == 7
    assert cm.pixel_accuracy() == pytest.approx(5 / 7)


def test_miou_is_dataset_level_not_mean_of_images():
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 3, (8, 8)) for _ in range(4)]
    targets = [rng.integers(0, 3, (8, 8)) for _ in range(4)]
    cm = ConfusionMatrix(3)
    for p, t in zip(preds, targets):
        cm.update(torch.tensor(p), torch.tensor(t))
    p, t = np.concatenate(preds), np.concatenate(targets)
    brute = [((p == c) & (t == c)).sum() / ((p == c) | (t == c)).sum() for c in range(3)]
    assert cm.miou() == pytest.approx(np.mean(brute))
    assert mean_iou(p, t, 3) == pytest.approx(np.mean(brute))


def test_ece_brute_force():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(300, 4)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 4, 300)
    conf, correct = probs.max(1), probs.argmax(1) == y
    ece = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    assert expected_calibration_error(probs, y, n_bins=10) == pytest.approx(ece)
    perfect = np.eye(4)[y]
    assert expected_calibration_error(perfect, y) == 0.0
