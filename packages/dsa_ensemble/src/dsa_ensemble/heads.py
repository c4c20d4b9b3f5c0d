r"""Multi-head blocks that sit between a backbone's last feature map and S classifiers.

DSA block (official ``MultiStream`` + ``MultiAdaptor``, classification defaults):

.. math::

    z &= W_{pre} * f + b_{pre}, \quad f \in \mathbb{R}^{B\times C\times H\times W},
        z \in \mathbb{R}^{B\times (C + m(S-1))\times H\times W}, \; m = \lfloor 0.1 C \rfloor \\
    \tilde z_s &= \mathrm{perturb}_s(z)\quad\text{(training only; with prob. } p\text{:
        } u(z-\bar z)+\bar z,\; \mathrm{clamp}(\cdot+\epsilon, 0, 1)) \\
    h_s &= [\tilde z_s[\,sm:(s+1)m\,] \;\|\; A_s(\tilde z_s[\,mS:\,])] \in \mathbb{R}^{B\times C
        \times H\times W} \\
    \text{logits}_s &= W_s\, \mathrm{GAP}(\mathrm{LeakyReLU}_{0.1}(\mathrm{BN}_s(h_s))) + b_s

with the scalar draws :math:`u\sim U(1-\nu, 1+\nu)`, :math:`\epsilon\sim U(-\nu,\nu)` shared by the
whole batch (:math:`\nu` = ``noise_factor`` = 0.2) and :math:`\bar z` the mean of the whole tensor.
:math:`A_s` is a plain stack of 1x1 convs, widths ``d -> w_1+10s -> ... -> w_k+10s -> d``
(:math:`d = C - m`), each conv followed by ``ACT[s mod 5]`` (the last one too), no BN and no
residual; its output *replaces* the shared channels. ``BN_s`` is one BN per head (default here) or
the official single BN shared by all heads (``head_bn="shared"``).

The pose variant (``expand=False``): the 1x1 conv keeps C channels; head s sees every channel but
the other heads' private blocks, which are zeroed by a mask; the adapter is two convs
``d -> d+10s -> d`` on the ``C - mS`` shared channels.

CBE (the official ``WideResNet_MS``) is the same block with ``adapters=False`` and a feature
decorrelation loss on the private slices (:func:`dsa_ensemble.losses.feature_decorrelation_loss`).
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "AdapterStack",
    "DSAHead",
    "HeadOutput",
    "MultiHeadEnsemble",
    "SingleHead",
    "activation",
    "init_adapter_",
    "init_linear_",
    "perturb_features",
]

# ACT[s mod 5] of the official Conv2 block (relu_idx)
ACTIVATIONS = ("relu", "leaky_relu", "prelu", "rrelu", "elu")


class HeadOutput(NamedTuple):
    """``logits``: S tensors (B, K) (or (B, K, H, W) heatmaps); ``private``: S private slices."""

    logits: list[torch.Tensor]
    private: list[torch.Tensor] | None


def activation(index: int) -> nn.Module:
    """``ACT[index mod 5]`` from [ReLU, LeakyReLU(0.01), PReLU, RReLU, ELU] (torch defaults)."""
    name = ACTIVATIONS[index % 5]
    return {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.01), "prelu": nn.PReLU,
            "rrelu": nn.RReLU, "elu": nn.ELU}[name]()  # fmt: skip


def _uniform_bias_(layer: nn.Module) -> None:
    if layer.bias is not None:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(layer.bias, -bound, bound)


def init_linear_(layer: nn.Linear | nn.Conv2d, scheme: int) -> None:
    """Head init ``scheme mod 5``: N(0,1e-3)+0, U(+-1/sqrt(fan_in)), N(0,1e-3)+0,
    kaiming_normal(a=sqrt 5), kaiming_uniform(a=sqrt 5) (official ``ms_fc_initialize``)."""
    s = scheme % 5
    if s in (0, 2):
        nn.init.normal_(layer.weight, std=1e-3)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    elif s == 1:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(layer.weight, -bound, bound)
        if layer.bias is not None:
            nn.init.uniform_(layer.bias, -bound, bound)
    elif s == 3:
        nn.init.kaiming_normal_(layer.weight, a=math.sqrt(5))
        _uniform_bias_(layer)
    else:
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
        _uniform_bias_(layer)


def init_adapter_(conv: nn.Conv2d, scheme: int) -> None:
    """Adapter init ``scheme mod 5``: N(0,1e-3)+0, N(0,1e-3)+0, kaiming_normal, kaiming_uniform,
    N(0,1) weights and bias (official ``ms_adapter_initialize``)."""
    s = scheme % 5
    if s in (0, 1):
        nn.init.normal_(conv.weight, std=1e-3)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    elif s == 2:
        nn.init.kaiming_normal_(conv.weight, a=math.sqrt(5))
        _uniform_bias_(conv)
    elif s == 3:
        nn.init.kaiming_uniform_(conv.weight, a=math.sqrt(5))
        _uniform_bias_(conv)
    else:
        nn.init.normal_(conv.weight)
        if conv.bias is not None:
            nn.init.normal_(conv.bias)


class AdapterStack(nn.Module):
    """Adapter ``A_s``: 1x1 convs ``dim -> w_1 + unit*s -> ... -> dim``, each + ``ACT[s mod 5]``.

    ``residual`` / ``batch_norm`` are documented deviations (off in the official code).
    """

    def __init__(self, dim: int, widths: tuple[int, ...], index: int, unit: int = 10,
                 residual: bool = False, batch_norm: bool = False):  # fmt: skip
        super().__init__()
        self.index, self.residual = index, residual
        sizes = [dim, *[w + unit * index for w in widths], dim]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers.append(nn.Conv2d(a, b, 1, bias=True))
            if batch_norm:
                layers.append(nn.BatchNorm2d(b))
            layers.append(activation(index))
        self.layers = nn.Sequential(*layers)
        self.widths = tuple(sizes)

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.layers if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)
        return x + y if self.residual else y


def perturb_features(x: torch.Tensor, noise_factor: float, prob: float, clamp: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """The official ``_noisy_mean``: with probability ``prob`` one scalar draw for the batch,
    ``u (x - mean(x)) + mean(x)`` with ``u ~ U(1-nf, 1+nf)``, then ``+ U(-nf, nf)`` and a clamp
    to [0, 1]. Otherwise ``x`` unchanged."""
    draws = torch.rand(3, generator=generator).tolist()
    if draws[0] > prob:
        return x
    mu = x.mean()
    u = 1 - noise_factor + 2 * noise_factor * draws[1]
    eps = -noise_factor + 2 * noise_factor * draws[2]
    y = u * (x - mu) + mu + eps
    return y.clamp(0, 1) if clamp else y


def _head_tail(c: int, k: int, s: int, scheme_init: bool) -> nn.Linear:
    fc = nn.Linear(c, k)
    if scheme_init:
        init_linear_(fc, s)
    else:
        nn.init.xavier_normal_(fc.weight)
        nn.init.zeros_(fc.bias)
    return fc


def _pool(h: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(h, 1).flatten(1)


class SingleHead(nn.Module):
    """Supervised baseline: BN -> LeakyReLU(0.1) -> GAP -> Linear(C, K); one logit tensor."""

    def __init__(self, in_channels: int, num_classes: int, bn_momentum: float = 0.001):
        super().__init__()
        self.num_heads = 1
        self.bn = nn.BatchNorm2d(in_channels, momentum=bn_momentum)
        self.fc = _head_tail(in_channels, num_classes, 0, scheme_init=False)

    def forward(self, f: torch.Tensor) -> HeadOutput:
        return HeadOutput([self.fc(_pool(F.leaky_relu(self.bn(f), 0.1)))], None)


class MultiHeadEnsemble(nn.Module):
    """MHE baseline: S identical Linear heads on the same pooled feature (seed-only diversity)."""

    def __init__(self, in_channels: int, num_classes: int, heads: int = 5,
                 bn_momentum: float = 0.001):  # fmt: skip
        super().__init__()
        self.num_heads = heads
        self.bn = nn.BatchNorm2d(in_channels, momentum=bn_momentum)
        self.fcs = nn.ModuleList(
            _head_tail(in_channels, num_classes, s, scheme_init=False) for s in range(heads)
        )

    def forward(self, f: torch.Tensor) -> HeadOutput:
        g = _pool(F.leaky_relu(self.bn(f), 0.1))
        return HeadOutput([fc(g) for fc in self.fcs], None)


class DSAHead(nn.Module):
    """The DSA block and its S heads (see the module docstring for the equations).

    Args:
        in_channels: C, channels of the backbone's last feature map.
        num_classes: K.
        heads: S (official default 5).
        split_factor: m = floor(split_factor * C) private channels per head.
        expand: True (classification): 1x1 conv C -> C + m(S-1), private/shared split by slicing;
            False (pose variant): 1x1 conv C -> C and per-head channel masks.
        adapters: structure-diverse adapters on the shared channels (False: the CBE baseline).
        adapter_widths: hidden widths before the +10s offset; ``None`` = the variant's official
            widths: (512, 1024, 1024, 512) when ``expand`` else (d,) with d the shared width.
        width_unit: the per-head offset unit (10).
        head_bn: ``"per_head"`` (default; one BN per head) or ``"shared"`` (official code).
        bn_momentum: momentum of the head BN (official 0.001).
        noise_factor, perturb_prob, perturb_clamp: the training-only feature perturbation.
        perturb_eval: apply the perturbation in eval too (the official forward does; off here).
        scheme_init: per-head init schemes s mod 5 for adapters and Linear heads.
        adapter_residual, adapter_bn: documented deviations (off in the official code).
        output: ``"logits"`` (BN, LeakyReLU, GAP, Linear) or ``"heatmap"`` (per-head 1x1 conv to
            K maps, the pose head).

    ``forward(f)`` takes (B, C, H, W) and returns :class:`HeadOutput` with S logit tensors and the
    S private slices (B, m, H, W) used by CBE's decorrelation loss.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        heads: int = 5,
        *,
        split_factor: float = 0.1,
        expand: bool = True,
        adapters: bool = True,
        adapter_widths: tuple[int, ...] | None = None,
        width_unit: int = 10,
        head_bn: str = "per_head",
        bn_momentum: float = 0.001,
        noise_factor: float = 0.2,
        perturb_prob: float = 0.5,
        perturb_clamp: bool = True,
        perturb_eval: bool = False,
        scheme_init: bool = True,
        adapter_residual: bool = False,
        adapter_bn: bool = False,
        output: str = "logits",
    ):
        super().__init__()
        if head_bn not in ("per_head", "shared"):
            raise ValueError(f"head_bn must be 'per_head' or 'shared', got {head_bn!r}")
        if output not in ("logits", "heatmap"):
            raise ValueError(f"output must be 'logits' or 'heatmap', got {output!r}")
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        c, s_num = in_channels, heads
        m = int(c * split_factor)
        if m < 1:
            raise ValueError(f"floor({split_factor} * {c}) = 0 private channels; use more channels")
        expanded = c + m * (s_num - 1) if expand else c
        shared = expanded - m * s_num
        if shared < 1:
            raise ValueError(f"{s_num} heads x {m} private channels leave no shared channel of {c}")
        self.in_channels, self.num_classes, self.num_heads = c, num_classes, s_num
        self.m, self.expanded_channels, self.shared_channels = m, expanded, shared
        self.expand, self.head_bn, self.output = expand, head_bn, output
        self.noise_factor, self.perturb_prob = noise_factor, perturb_prob
        self.perturb_clamp, self.perturb_eval = perturb_clamp, perturb_eval
        self.pre = nn.Conv2d(c, expanded, 1, bias=True)
        nn.init.kaiming_normal_(self.pre.weight, mode="fan_out", nonlinearity="leaky_relu")
        nn.init.zeros_(self.pre.bias)
        if adapter_widths is None:
            adapter_widths = (512, 1024, 1024, 512) if expand else (shared,)
        self.adapters = None
        if adapters:
            self.adapters = nn.ModuleList(
                AdapterStack(
                    shared, tuple(adapter_widths), s, width_unit, adapter_residual, adapter_bn
                )
                for s in range(s_num)
            )
            if scheme_init:
                for s, a in enumerate(self.adapters):
                    for conv in a.convs():
                        init_adapter_(conv, s)
        head_c = c  # m private + (C - m) shared when expanding; C with masks
        if head_bn == "per_head":
            self.bns = nn.ModuleList(
                nn.BatchNorm2d(head_c, momentum=bn_momentum) for _ in range(s_num)
            )
        else:
            self.bn = nn.BatchNorm2d(head_c, momentum=bn_momentum)
        if output == "logits":
            self.fcs = nn.ModuleList(
                _head_tail(head_c, num_classes, s, scheme_init) for s in range(s_num)
            )
        else:
            self.fcs = nn.ModuleList(nn.Conv2d(head_c, num_classes, 1) for _ in range(s_num))
            if scheme_init:
                for s, conv in enumerate(self.fcs):
                    init_linear_(conv, s)
        if not expand:
            mask = torch.ones(s_num, expanded)
            mask[:, : m * s_num] = 0
            for s in range(s_num):
                mask[s, s * m : (s + 1) * m] = 1
            self.register_buffer("channel_masks", mask, persistent=False)

    def private_slice(self, s: int) -> slice:
        return slice(s * self.m, (s + 1) * self.m)

    def head_bn_module(self, s: int) -> nn.BatchNorm2d:
        return self.bns[s] if self.head_bn == "per_head" else self.bn

    def head_features(self, z: torch.Tensor, s: int) -> torch.Tensor:
        """h_s (B, C, H, W) from the expanded map z, perturbation included when active."""
        if self.noise_factor > 0 and (self.training or self.perturb_eval):
            z = perturb_features(z, self.noise_factor, self.perturb_prob, self.perturb_clamp)
        shared_idx = slice(self.m * self.num_heads, self.expanded_channels)
        shared = z[:, shared_idx]
        if self.adapters is not None:
            shared = self.adapters[s](shared)
        if self.expand:
            return torch.cat([z[:, self.private_slice(s)], shared], dim=1)
        masked = z[:, : self.m * self.num_heads] * self.channel_masks[s, : self.m * self.num_heads,
                                                                       None, None]  # fmt: skip
        return torch.cat([masked, shared], dim=1)

    def forward(self, f: torch.Tensor) -> HeadOutput:
        if f.ndim != 4 or f.shape[1] != self.in_channels:
            raise ValueError(
                f"expected (B, {self.in_channels}, H, W) features, got {tuple(f.shape)}"
            )
        z = self.pre(f)
        logits, private = [], []
        for s in range(self.num_heads):
            h = self.head_features(z, s)
            private.append(h[:, : self.m] if self.expand else h[:, self.private_slice(s)])
            if self.output == "logits":
                g = _pool(F.leaky_relu(self.head_bn_module(s)(h), 0.1))
                logits.append(self.fcs[s](g))
            else:
                logits.append(self.fcs[s](h))
        return HeadOutput(logits, private)
