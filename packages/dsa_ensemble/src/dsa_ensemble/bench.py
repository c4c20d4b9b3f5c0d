"""Overhead of DSA against one head, S naive heads (MHE) and a 5-model deep ensemble, measured in
one run: parameters, forward FLOPs (``torch.utils.flop_counter``), training-step time and peak
memory (``labcore.memory``, live tensor bytes of one training step incl. optimizer state), plus the
decorrelation effect (head correlation / disagreement of DSA vs MHE at equal steps on digits).

Backbones: WRN-28-2 at 32x32 (the CIFAR recipe, official adapter widths 512/1024/1024/512 + 10s)
and, without ``--quick``, timm ResNet-50 at 224x224 (random init).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dsa_ensemble.losses import supervised_loss
from dsa_ensemble.model import DSAModel, build_backbone
from labcore.memory import peak_memory

__all__ = ["ARMS", "measure_arm", "run_bench"]

ARMS = ("single", "mhe", "dsa", "deep_ensemble_5")


class _DeepEnsemble(nn.Module):
    """S independent single-head models; forward returns their S logits."""

    def __init__(self, make, n: int = 5):
        super().__init__()
        self.members = nn.ModuleList(make() for _ in range(n))
        self.num_heads = n

    def forward(self, x):
        return [m(x)[0] for m in self.members]


def _build(arm: str, backbone: str, num_classes: int, input_size: int) -> nn.Module:
    def one(head_type: str, heads: int = 5) -> DSAModel:
        return DSAModel(build_backbone(backbone), num_classes, heads=heads, head_type=head_type,
                        input_size=input_size)  # fmt: skip

    if arm == "deep_ensemble_5":
        return _DeepEnsemble(lambda: one("single", 1), 5)
    return one(arm, 1 if arm == "single" else 5)


def _train_step(state) -> None:
    model, opt, x, y, step = state
    logits = model(x)
    loss = supervised_loss(logits, y, step[0], blank_num=1 if len(logits) > 1 else 0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    step[0] += 1


def measure_arm(arm: str, backbone: str, input_size: int, batch: int, steps: int,
                num_classes: int = 10, seed: int = 0) -> dict:  # fmt: skip
    """Params, forward GFLOPs per image, median step seconds and peak step bytes of one arm."""
    torch.manual_seed(seed)
    model = _build(arm, backbone, num_classes, input_size).train()
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            model(torch.rand(1, 3, input_size, input_size))
    flops = fc.get_total_flops()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.rand(batch, 3, input_size, input_size)
    y = torch.randint(0, num_classes, (batch,))
    state = (model, opt, x, y, [0])
    # the first step (optimizer state appears) measured for its live-tensor peak
    mem = peak_memory(_train_step, state, method="tensors")
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        _train_step(state)
        times.append(time.perf_counter() - t0)
    return {"params": params, "gflops_per_image": flops / 1e9,
            "step_seconds": statistics.median(times), "peak_step_bytes": mem.peak_bytes,
            "batch": batch, "input_size": input_size}  # fmt: skip


def decorrelation(epochs: int, seed: int = 0) -> dict:
    """MHE vs DSA on digits at label noise 0.4, test sigma 0.3, the same steps and seed."""
    from dsa_ensemble.demo import run_supervised

    out = {}
    for arm in ("mhe", "dsa"):
        r = run_supervised(arm, seed, 0.4, epochs)["sigma=0.3"]
        out[arm] = {k: r[k] for k in ("accuracy", "nll", "head_correlation", "head_disagreement",
                                      "ensemble_gain")}  # fmt: skip
    return out


def run_bench(quick: bool = True, seed: int = 0, progress=None) -> dict:
    configs = [("wrn28_2", 32, 4 if quick else 32, 1 if quick else 5)]
    if not quick:
        configs.append(("resnet50", 224, 8, 3))
    out: dict = {}
    items = [(b, s, n, k, arm) for b, s, n, k in configs for arm in ARMS]
    it = progress(items, desc="bench") if progress else items
    for backbone, size, batch, steps, arm in it:
        key = f"{backbone}@{size}"
        out.setdefault(key, {})[arm] = measure_arm(arm, backbone, size, batch, steps, seed=seed)
    for arms in out.values():
        base = arms["single"]
        for r in arms.values():
            r["time_ratio"] = r["step_seconds"] / base["step_seconds"]
            r["memory_ratio"] = r["peak_step_bytes"] / base["peak_step_bytes"]
            r["params_ratio"] = r["params"] / base["params"]
            r["flops_ratio"] = r["gflops_per_image"] / base["gflops_per_image"]
    out["decorrelation"] = decorrelation(4 if quick else 10, seed)
    return out
