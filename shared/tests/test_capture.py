from dataclasses import dataclass

import pytest
import torch
from torch import nn

from labcore.capture import ActivationCapture, StopForward, capture, unwrap_tensor
from labcore.cli import UserError


@dataclass
class _Out:
    sample: torch.Tensor


class Block(nn.Module):
    """Returns a tuple (main, extra), like a diffusers down block."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x):
        h = self.act(self.conv(x))
        return h, (h * 2,)


class Wrapped(nn.Module):
    """Returns an object with ``.sample``, like a diffusers Transformer2DModel."""

    def __init__(self, c):
        super().__init__()
        self.proj = nn.Linear(c, c)

    def forward(self, x):
        y = self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return _Out(sample=x + y)


class Net(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv_in = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.ModuleList([Block(c), Block(c)])
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.vit = Wrapped(2 * c)
        self.head = nn.Conv2d(2 * c, 1, 1)
        self.calls = []

    def forward(self, x):
        self.calls.append("conv_in")
        h = self.conv_in(x)
        for i, b in enumerate(self.blocks):
            self.calls.append(f"blocks.{i}")
            h, _ = b(h)
        self.calls.append("down")
        h = self.down(h)
        self.calls.append("vit")
        h = self.vit(h).sample
        self.calls.append("head")
        return self.head(h)


def _hook_count(model):
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_with_kwargs)
        for m in model.modules()
    )


def _manual(net, x):
    h0 = net.conv_in(x)
    h1 = net.blocks[0].act(net.blocks[0].conv(h0))
    h2 = net.blocks[1].act(net.blocks[1].conv(h1))
    h3 = net.down(h2)
    h4 = h3 + net.vit.proj(h3.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return {"conv_in": h0, "blocks.0": h1, "blocks.1": h2, "down": h3, "vit": h4,
            "vit.proj": net.vit.proj(h3.permute(0, 2, 3, 1)), "head": net.head(h4)}  # fmt: skip


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net().eval()


def test_outputs_and_inputs_match_manual_forward(net):
    x = torch.randn(2, 3, 8, 6)
    ref = _manual(net, x)
    paths = ["conv_in", "blocks.0", "blocks.1", "down", "vit", "vit.proj"]
    inputs = {"x_in": "conv_in", "head_in": "head"}
    with ActivationCapture(net, outputs=paths, inputs=inputs) as cap:
        y = cap.run(net, x)
    assert torch.allclose(y, ref["head"])
    shapes = {k: tuple(v.shape) for k, v in cap.outputs.items()}
    full, half = (2, 4, 8, 6), (2, 8, 4, 3)
    assert shapes == {"conv_in": full, "blocks.0": full, "blocks.1": full,
                      "down": half, "vit": half, "vit.proj": (2, 4, 3, 8)}  # fmt: skip
    for k in paths:
        assert torch.allclose(cap.outputs[k], ref[k], atol=1e-6), k
        assert not cap.outputs[k].requires_grad
    # the tuple unwrapped to its first element (not the doubled extra), .sample unwrapped
    assert torch.equal(cap.inputs["x_in"], x)
    assert torch.allclose(cap.inputs["head_in"], ref["vit"], atol=1e-6)
    assert cap.missing() == []


def test_only_requested_and_detached_with_grad(net):
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    with ActivationCapture(net, outputs=["down"]) as cap:
        net(x).sum().backward()  # a training forward still works and keeps its graph
    assert list(cap.outputs) == ["down"] and cap.inputs == {}
    assert not cap.outputs["down"].requires_grad and x.grad is not None


def test_cast_and_device(net):
    x = torch.randn(1, 3, 4, 4)
    ref = _manual(net, x)
    cases = [("fp16", torch.float16), ("bf16", torch.bfloat16), (torch.float64, torch.float64)]
    for dt, want in cases:
        with ActivationCapture(net, outputs=["blocks.1"], dtype=dt, device="cpu") as cap:
            cap.run(net, x)
        got = cap.outputs["blocks.1"]
        assert got.dtype == want and got.device.type == "cpu"
        assert torch.allclose(got.float(), ref["blocks.1"], atol=1e-2, rtol=1e-2)
    with pytest.raises(UserError, match="unknown dtype"):
        ActivationCapture(net, outputs=["down"], dtype="int3")


def test_clone_protects_against_in_place_updates():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Identity()

        def forward(self, x):
            h = self.a(x * 1.0)
            h.add_(100.0)  # the network changes the tensor after the hook saw it
            return h

    m = InPlace()
    x = torch.ones(3)
    with ActivationCapture(m, outputs=["a"]) as cap:
        cap.run(m, x)
    assert torch.equal(cap.outputs["a"], torch.ones(3))
    with ActivationCapture(m, outputs=["a"], clone=False) as cap:
        cap.run(m, x)
    assert torch.equal(cap.outputs["a"], torch.full((3,), 101.0))


def test_transform_applied(net):
    x = torch.randn(1, 3, 8, 8)
    ref = _manual(net, x)
    pool = lambda k, t: torch.nn.functional.adaptive_avg_pool2d(t, 2)  # noqa: E731
    with ActivationCapture(net, outputs=["blocks.0"], transform=pool) as cap:
        cap.run(net, x)
    want = torch.nn.functional.adaptive_avg_pool2d(ref["blocks.0"], 2)
    assert torch.allclose(cap.outputs["blocks.0"], want, atol=1e-6)


def test_hooks_removed_on_exit_and_on_error(net):
    base = _hook_count(net)
    with ActivationCapture(net, outputs=["down", "vit"], inputs=["head"]) as cap:
        assert _hook_count(net) == base + 4  # 3 requested + the root's reset pre-hook
        cap.run(net, torch.randn(1, 3, 4, 4))
    assert _hook_count(net) == base
    with pytest.raises(RuntimeError, match="boom"):
        with ActivationCapture(net, outputs=["down"]):
            raise RuntimeError("boom")
    assert _hook_count(net) == base
    # an error inside the forward (wrong channel count) also leaves no hook behind
    with pytest.raises(RuntimeError):
        with ActivationCapture(net, outputs=["down"], stop_early=True) as cap:
            cap.run(net, torch.randn(1, 5, 4, 4))
    assert _hook_count(net) == base
    with pytest.raises(RuntimeError, match="inside `with`"):
        cap.run(net, torch.randn(1, 3, 4, 4))


def test_early_stop_skips_later_modules(net):
    x = torch.randn(1, 3, 8, 8)
    ref = _manual(net, x)
    later = {"down": 0, "vit": 0, "head": 0}

    def count(name):
        def hook(*_):
            later[name] += 1

        return hook

    handles = [net.get_submodule(n).register_forward_hook(count(n)) for n in later]
    try:
        net.calls.clear()
        with ActivationCapture(net, outputs=["blocks.0", "conv_in"], stop_early=True) as cap:
            assert cap.run(net, x) is None
            assert cap.stopped
        assert net.calls == ["conv_in", "blocks.0"]  # blocks.1 never started
        assert later == {"down": 0, "vit": 0, "head": 0}
        assert torch.allclose(cap.outputs["blocks.0"], ref["blocks.0"], atol=1e-6)
        # stopping inside a plain `with` (no run): the context manager swallows the stop
        net.calls.clear()
        with ActivationCapture(net, inputs=["down"], stop_early=True) as cap:
            net(x)
            raise AssertionError("not reached: the forward stops at down's pre-hook")
        assert net.calls == ["conv_in", "blocks.0", "blocks.1", "down"]
        assert later["down"] == 0  # a stop at an input hook skips the module itself
        assert torch.allclose(cap.inputs["down"], ref["blocks.1"], atol=1e-6)
    finally:
        for h in handles:
            h.remove()


def test_early_stop_resets_per_forward(net):
    xs = [torch.randn(1, 3, 4, 4) for _ in range(3)]
    with ActivationCapture(net, outputs=["blocks.1"], stop_early=True) as cap:
        got = []
        for x in xs:
            cap.run(net, x)
            got.append(cap.outputs["blocks.1"])
    for x, g in zip(xs, got):
        assert torch.allclose(g, _manual(net, x)["blocks.1"], atol=1e-6)


def test_without_stop_forward_completes(net):
    x = torch.randn(1, 3, 4, 4)
    with ActivationCapture(net, outputs=["blocks.0"]) as cap:
        y = cap.run(net, x)
    assert y is not None and not cap.stopped and torch.allclose(y, _manual(net, x)["head"])


def test_unknown_paths_named(net):
    with pytest.raises(UserError) as e:
        ActivationCapture(net, outputs=["blocks.7", "down"], inputs=["vit.prj"])
    msg = str(e.value)
    assert "'blocks.7'" in msg and "'vit.prj'" in msg and "'down'" not in msg.split("(")[0]
    assert "did you mean 'vit.proj'" in msg
    assert _hook_count(net) == 0
    with pytest.raises(UserError, match="nothing to capture"):
        ActivationCapture(net)


def test_missing_and_one_shot(net):
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(2, 2)
            self.unused = nn.Linear(2, 2)

        def forward(self, x):
            return self.used(x)

    m = Skips()
    x = torch.randn(3, 2)
    with ActivationCapture(m, outputs=["used", "unused"], stop_early=True) as cap:
        assert cap.run(m, x) is not None  # never all stored, so never stopped
    assert cap.missing() == ["unused"]
    got = capture(m, lambda: m(x), outputs=["used"], inputs=["used"])
    assert set(got) == {"used", "used:input"} and torch.equal(got["used:input"], x)
    assert torch.allclose(got["used"], m.used(x))
    assert _hook_count(m) == 0


def test_unwrap_tensor():
    t = torch.ones(1)
    assert unwrap_tensor(((t, 2), 3)) is t
    assert unwrap_tensor(_Out(sample=t)) is t
    assert unwrap_tensor({"sample": [t]}) is t
    assert unwrap_tensor(()) is None and unwrap_tensor("x") is None
    assert issubclass(StopForward, Exception)


def test_select_picks_another_element(net):
    x = torch.randn(1, 3, 4, 4)
    ref = _manual(net, x)
    pick_extra = lambda k, out: out[1][0]  # noqa: E731  the block's doubled second output
    with ActivationCapture(net, outputs=["blocks.0"], select=pick_extra) as cap:
        cap.run(net, x)
    assert torch.allclose(cap.outputs["blocks.0"], 2 * ref["blocks.0"], atol=1e-6)
