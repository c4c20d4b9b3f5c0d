"""Training loops on tiny data: supervised learns, SSL updates SAT state, bf16 on CPU."""

import torch

from dsa_ensemble import DSAConfig, digits_splits, fit, predict, ssl_split
from dsa_ensemble.train import ModelEMA

TINY = dict(
    backbone="small_cnn",
    adapter_widths="8,8",
    bn_momentum=0.1,
    ema_decay=0.9,
    lr=0.1,
    batch_size=32,
)


def _digits(n=300):
    tr, te = digits_splits(0)
    return tr.subset(range(n)), te.subset(range(200))


def test_supervised_dsa_learns_and_selects_on_validation():
    tr, te = _digits()
    cfg = DSAConfig(head_type="dsa", heads=3, epochs=6, scheme_init=False, **TINY)
    res = fit(cfg, tr, val=te, seed=0)
    z = predict(res.eval_model, te.x)
    assert z.shape == (3, 200, 10)
    acc = (z.softmax(-1).mean(0).argmax(-1) == te.y).float().mean().item()
    assert acc > 0.5  # far above chance (0.1) after 54 steps
    assert res.best_val_accuracy == max(h["val_accuracy"] for h in res.history)
    assert res.best_epoch == max(range(6), key=lambda e: res.history[e]["val_accuracy"])


def test_ssl_updates_sat_state_and_reports_pseudo_labels():
    tr, _ = _digits(200)
    lab, unl = ssl_split(tr.y, 3, seed=0)
    cfg = DSAConfig(
        head_type="dsa",
        heads=3,
        epochs=2,
        steps_per_epoch=4,
        mu=2,
        ensemble_warmup=2,
        sat_ema=0.9,
        **{**TINY, "batch_size": 16},
    )
    res = fit(cfg, tr.subset(lab), unlabeled=tr.subset(unl), unlabeled_targets=tr.y[unl])
    assert res.steps == 8
    assert all(t != 0.1 for t in res.pseudo_labels["sat_tau"])  # moved from 1/K
    assert 0 <= res.pseudo_labels["mask_rate"] <= 1
    assert 0 <= res.pseudo_labels["accuracy"] <= 1


def test_bf16_autocast_trains_on_cpu():
    tr, _ = _digits(64)
    cfg = DSAConfig(head_type="mhe", heads=2, epochs=1, **TINY)
    res = fit(cfg, tr, precision="bf16")
    assert res.steps == 2 and torch.isfinite(torch.tensor(res.history[0]["train_loss"]))


def test_ema_update_rule():
    lin = torch.nn.Linear(2, 1)
    ema = ModelEMA(lin, 0.9)
    before = ema.ema.weight.clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    ema.update(lin)
    assert torch.allclose(ema.ema.weight, 0.9 * before + 0.1 * lin.weight)
