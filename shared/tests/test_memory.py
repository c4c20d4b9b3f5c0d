import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from labcore.memory import (
    PeakMemory,
    format_bytes,
    peak_memory,
    saved_activation_bytes,
    training_state_bytes,
)

F32 = 4


def _stack():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5), nn.Linear(5, 3))
    for p in model[3].parameters():  # a frozen part
        p.requires_grad_(False)
    return model


def test_training_state_hand_count_with_adam():
    model = _stack()
    trainable = (10 * 20 + 20) + (20 * 5 + 5)  # 325 floats
    frozen = 5 * 3 + 3  # 18 floats
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    s0 = training_state_bytes(model, opt)
    assert (s0.trainable_params, s0.frozen_params, s0.grads, s0.optimizer_state) == (
        trainable * F32, frozen * F32, 0, 0,
    )  # fmt: skip
    model(torch.randn(4, 10)).sum().backward()
    opt.step()
    s = training_state_bytes(model, opt)
    assert s.grads == trainable * F32
    # exp_avg + exp_avg_sq per trainable tensor, plus one scalar float32 `step` per tensor (4).
    assert s.optimizer_state == 2 * trainable * F32 + 4 * F32
    assert s.total == (trainable * 4 + frozen + 4) * F32
    assert s.as_dict()["total"] == s.total


def test_tied_weights_counted_once():
    emb = nn.Embedding(7, 3)
    head = nn.Linear(3, 7, bias=False)
    head.weight = emb.weight
    s = training_state_bytes(nn.ModuleList([emb, head]))
    assert s.trainable_params == 7 * 3 * F32


def test_saved_bytes_hand_count_and_params_excluded():
    torch.manual_seed(0)
    lin1, lin2 = nn.Linear(8, 16), nn.Linear(16, 4)
    x = torch.randn(5, 8)

    def f():
        return lin2(torch.relu(lin1(x))).sum()

    # lin1 saves x (5x8); relu saves its output (5x16), which lin2 saves too (same storage);
    # weights are parameters and not counted.
    assert saved_activation_bytes(f) == (5 * 8 + 5 * 16) * F32


def test_frozen_input_saves_nothing_and_checkpoint_saves_less():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32), nn.GELU())
    head = nn.Linear(32, 1)
    x = torch.randn(16, 32)

    def plain():
        return head(block(x)).sum()

    def ckpt():
        return head(checkpoint(block, x, use_reentrant=False)).sum()

    full = saved_activation_bytes(plain)
    saved = saved_activation_bytes(ckpt)
    # Plain: x, gelu1 in and out-shared linear2 input ... count by hand:
    # linear1 saves x (16x32); gelu1 saves its input (16x64); linear2 saves gelu1 output (16x64);
    # gelu2 saves its input (16x32); head saves gelu2 output (16x32).
    assert full == (16 * 32 + 16 * 64 + 16 * 64 + 16 * 32 + 16 * 32) * F32
    # Checkpointed: only the region's boundary input x and the head's input stay saved.
    assert saved == (16 * 32 + 16 * 32) * F32
    with torch.no_grad():
        assert saved_activation_bytes(plain) == 0


def test_peak_memory_cpu_subprocess_sees_allocation():
    # fn must be importable in a fresh process; torch.ones writes (touches) every page.
    small = peak_memory(torch.ones, 2**18)
    big = peak_memory(torch.ones, 2**24)
    assert isinstance(big, PeakMemory) and big.device == "cpu"
    assert big.baseline_bytes > 0
    assert 60 * 2**20 <= big.peak_bytes - small.peak_bytes <= 70 * 2**20


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * 2**20) == "3.0 MiB"
