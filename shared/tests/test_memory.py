import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from labcore.memory import (
    PeakMemory,
    TensorMemoryTracker,
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


def test_saved_bytes_releases_the_graph():
    with TensorMemoryTracker("cpu") as mem:
        lin = nn.Linear(64, 64)
        x = torch.randn(32, 64)
        saved_activation_bytes(lambda f, t: torch.relu(f(t)).sum(), lin, x)  # relu saves its out
        del lin, x
    assert mem.current_bytes == 0  # graph, saved tensors and the model are all gone


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


def test_peak_memory_cpu_setup_is_outside_the_measurement():
    # setup allocates 64 MiB in the subprocess before the peak is reset; the sum allocates ~nothing
    pm = peak_memory(torch.Tensor.sum, 2**24, setup=torch.ones)
    assert pm.peak_bytes < 16 * 2**20
    assert pm.baseline_bytes > 64 * 2**20


def test_tracker_counts_new_storages_once_and_frees_them():
    with TensorMemoryTracker("cpu") as mem:
        a = torch.ones(1000, 250)  # 1e6 B
        v = a.view(-1)[10:]  # a view: no new storage
        a.mul_(2)  # in place: nothing new
        b = a + 1  # 1e6 B
        assert mem.current_bytes == 2 * 10**6
        del a, v
        assert mem.current_bytes == 10**6  # a's storage freed only once v is gone
        torch.add(b, 1, out=b)  # out=: an alias of b
        c = torch.cat([b, b])  # 2e6 B
        assert (mem.current_bytes, mem.peak_bytes) == (3 * 10**6, 3 * 10**6)
        del b, c
        assert mem.current_bytes == 0
        mem.reset_peak()
        assert mem.peak_bytes == 0
        torch.ones(10, device="meta")  # another device: not counted
        assert mem.peak_bytes == 0
        s = torch.tensor([1.0, 2.0])  # built below the dispatcher, seen through lift_fresh
        assert mem.current_bytes == 2 * F32
        del s


def test_tracker_ignores_in_place_updates_of_preexisting_tensors():
    w = torch.zeros(256, 256)
    with TensorMemoryTracker("cpu") as mem:
        w.add_(1.0)
        w.copy_(torch.ones(1, 256).expand(256, 256))
    assert mem.peak_bytes == 256 * F32  # only the ones(1, 256)


def test_tracker_after_an_adam_step_equals_the_exact_state_count():
    model = _stack()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x = torch.randn(4, 10)
    with TensorMemoryTracker("cpu") as mem:
        model(x).sum().backward()  # the autograd engine's allocations are seen too
        opt.step()
    s = training_state_bytes(model, opt)
    # what survives the step is exactly the new gradients and Adam's state
    assert mem.current_bytes == s.grads + s.optimizer_state
    assert mem.peak_bytes >= mem.current_bytes + 4 * 20 * F32  # activations were alive too


def test_tracker_sees_checkpoint_recompute_save_memory():
    torch.manual_seed(0)
    blocks = nn.ModuleList(
        nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256)) for _ in range(4)
    )
    x = torch.randn(512, 256, requires_grad=True)

    def run(ckpt: bool) -> int:
        with TensorMemoryTracker("cpu") as mem:
            h = x
            for blk in blocks:
                h = checkpoint(blk, h, use_reentrant=False) if ckpt else blk(h)
            h.sum().backward()
        blocks.zero_grad(set_to_none=True)
        x.grad = None
        return mem.peak_bytes

    plain, ckpt = run(False), run(True)
    hidden = 512 * 1024 * F32  # one (512, 1024) activation: 2 MiB
    # plain keeps fc1 out and gelu out of every block (8 hidden) until backward reaches them;
    # checkpointing recomputes one block (2 hidden) at a time
    assert plain >= 8 * hidden
    assert ckpt <= plain - 3 * hidden


def test_peak_memory_tensors_method_with_setup():
    pm = peak_memory(torch.neg, 2**20, method="tensors", setup=torch.ones)
    assert (pm.method, pm.device, pm.peak_bytes) == ("tensors", "cpu", 4 * 2**20)
    assert pm.baseline_bytes >= 4 * 2**20  # the setup's tensor is alive, outside the peak
    with pytest.raises(ValueError, match="method"):
        peak_memory(torch.neg, 1, method="rss")


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * 2**20) == "3.0 MiB"
