"""``SnellLinear``: a frozen ``nn.Linear`` plus a sparse kernelized update (official parallel form).

    y = W0 x + b0 + DropPath( Dropout(x) · ΔWˢ ),      ΔWˢ = gate(κ(A, B)) ∈ R^{n×m}

The kernel merge, the gate and the matmul run inside a non-reentrant ``torch.utils.checkpoint``
(``recompute=True``), so neither ΔW nor the distance matrices nor the gate are kept for backward;
Dropout and DropPath stay outside the checkpoint. A fused linear (timm's ``attn.qkv``) is split
into ``S = 3`` independent n x n updates, each with its own threshold and its own DropPath.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from snell.config import SnellConfig
from snell.kernels import gate_delta, kernel_delta

__all__ = ["SnellLinear"]


def _split_drop_path(y: Tensor, p: float, splits: int, training: bool) -> Tensor:
    """DropPath on (B, ..., S·m') with an independent per-sample keep mask for each split."""
    if p == 0.0 or not training:
        return y
    keep = 1.0 - p
    shape = (y.shape[0],) + (1,) * (y.ndim - 2) + (splits, 1)
    mask = y.new_empty(shape).bernoulli_(keep).div_(keep)
    return (y.unflatten(-1, (splits, -1)) * mask).flatten(-2)


class _AddIntoSlice(torch.autograd.Function):
    """``y[..., start : start + m] += part`` in place, with a copy-free backward.

    Autograd's own in-place-on-a-slice (``CopySlices``) clones the whole incoming gradient; here
    ``y`` gets the gradient itself and ``part`` a view of its slice. ``y`` must be a tensor no
    backward needs (the output of the frozen base linear is one: linear saves its input).
    """

    @staticmethod
    def forward(ctx, y: Tensor, part: Tensor, start: int) -> Tensor:
        ctx.start, ctx.length = start, part.shape[-1]
        y.narrow(-1, start, part.shape[-1]).add_(part)
        ctx.mark_dirty(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, grad.narrow(-1, ctx.start, ctx.length), None


class SnellLinear(nn.Module):
    """SNELL adapter around a frozen ``nn.Linear`` (kept as ``base_layer``).

    Parameters per adapter name (``ParameterDict`` entries, peft-style):
      * ``snell_A``: (S, P, n, r/P), input-side factors;
      * ``snell_B``: (S, P, m/S, r/P), output-side factors; r(n + m/S) values per split, as LoRA-r;
      * ``snell_alpha``: (S, P) piece coefficients (frozen unless ``learn_alpha``), or
        (S, 3) = (α, β, γ) for the rbf / sigmoid ablations; absent for ``linear``.

    Args:
        base_layer: the linear layer to adapt (its parameters are frozen).
        config: the :class:`SnellConfig`.
        splits: 3 for a fused q|k|v linear, else 1.
        dropout: adapter input dropout probability (0 for proj, as in the official block).
    Shapes: input (B, ..., n) -> output (B, ..., m).
    """

    adapter_layer_names = ("snell_A", "snell_B", "snell_alpha")

    def __init__(
        self,
        base_layer: nn.Linear,
        config: SnellConfig,
        adapter_name: str = "default",
        splits: int = 1,
        dropout: float | None = None,
    ):
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"SnellLinear wraps nn.Linear, got {type(base_layer).__name__}")
        if base_layer.out_features % splits:
            raise ValueError(f"out_features {base_layer.out_features} not divisible by {splits}")
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.splits = splits
        self.config = config
        self.dropout_p = config.adapter_dropout if dropout is None else dropout
        self.snell_A = nn.ParameterDict()
        self.snell_B = nn.ParameterDict()
        self.snell_alpha = nn.ParameterDict()
        self.active_adapter = adapter_name
        self.merged_adapters: list[str] = []
        self.disable_adapters = False
        base_layer.requires_grad_(False)
        self.update_layer(adapter_name)

    def update_layer(self, adapter_name: str) -> None:
        """Create and initialise the factors of ``adapter_name``."""
        cfg, S, P = self.config, self.splits, self.config.num_pieces
        n, m, d = self.in_features, self.out_features // self.splits, cfg.r // P
        w = self.base_layer.weight
        A = torch.empty(S, P, n, d, device=w.device, dtype=w.dtype)
        B = torch.empty(S, P, m, d, device=w.device, dtype=w.dtype)
        if cfg.init == "official":
            # kaiming_uniform_(a=√5) on each (P, rows, d) tensor: fan_in = rows·d, bound 1/√fan_in
            for s in range(S):
                nn.init.kaiming_uniform_(A[s], a=math.sqrt(5))
                nn.init.kaiming_uniform_(B[s], a=math.sqrt(5))
        else:  # LoRA: A like nn.Linear(n, r) (bound 1/√n), B = 0
            nn.init.uniform_(A, -1 / math.sqrt(n), 1 / math.sqrt(n))
            nn.init.zeros_(B)
        self.snell_A[adapter_name] = nn.Parameter(A)
        self.snell_B[adapter_name] = nn.Parameter(B)
        if cfg.kernel == "piecewise_linear":
            alpha = torch.tensor(cfg.alpha, device=w.device, dtype=w.dtype).repeat(S, 1)
            self.snell_alpha[adapter_name] = nn.Parameter(alpha, requires_grad=cfg.learn_alpha)
        elif cfg.kernel in ("rbf", "sigmoid"):
            # [R] init so that ΔW ≈ 0 at start: α = 0.1, β = 1, γ = −α·κ(0-ish)
            gamma = -0.1 if cfg.kernel == "rbf" else -0.05
            kp = torch.tensor([0.1, 1.0, gamma], device=w.device, dtype=w.dtype).repeat(S, 1)
            self.snell_alpha[adapter_name] = nn.Parameter(kp)

    # ---------------------------------------------------------------- the update
    def _factors(self, adapter_name: str) -> tuple[Tensor, Tensor, Tensor | None]:
        alpha = self.snell_alpha[adapter_name] if adapter_name in self.snell_alpha else None
        return self.snell_A[adapter_name], self.snell_B[adapter_name], alpha

    def _gated_delta(self, A: Tensor, B: Tensor, alpha: Tensor | None) -> Tensor:
        """ΔWˢ of the splits in ``A``/``B`` (leading axis S), (in x S·m'), splits side by side."""
        cfg = self.config
        delta = kernel_delta(A, B, alpha, cfg.kernel, cfg.norm_p)  # (S, n, m')
        delta = gate_delta(delta, cfg.sparsity, cfg.gate)
        if delta.shape[0] == 1:
            return delta[0]
        return delta.permute(1, 0, 2).reshape(self.in_features, -1)

    def _low_rank_path(self) -> bool:
        """LoRA (linear kernel, s = 0) never needs ΔW: (x A) Bᵀ, as LoRA implementations do."""
        return self.config.kernel == "linear" and self.config.sparsity == 0.0

    def _delta_output(self, x: Tensor, A: Tensor, B: Tensor, alpha: Tensor | None) -> Tensor:
        """``x · ΔWˢ`` for the splits in ``A``/``B``: (B, ..., n) -> (B, ..., S·m')."""
        if self._low_rank_path():
            a = A.permute(0, 2, 1, 3).flatten(2)  # (S, n, r)
            b = B.permute(0, 2, 1, 3).flatten(2)  # (S, m', r)
            xa = torch.einsum("...n,snr->...sr", x, a)
            return torch.einsum("...sr,smr->...sm", xa, b).flatten(-2)
        # the kernel distances, the quantile threshold and the gate always run in fp32 (autocast
        # off; kthvalue on bf16 would tie most magnitudes); only the matmul x·ΔWˢ follows the
        # surrounding precision
        with torch.autocast(x.device.type, enabled=False):
            delta = self._gated_delta(
                A.float(), B.float(), None if alpha is None else alpha.float()
            )
        if torch.is_autocast_enabled(x.device.type):
            return x @ delta.to(torch.get_autocast_dtype(x.device.type))
        return x @ delta.to(x.dtype)

    def _split(self, s: int, A: Tensor, B: Tensor, alpha: Tensor | None):
        return A[s : s + 1], B[s : s + 1], None if alpha is None else alpha[s : s + 1]

    def get_delta_weight(self, adapter_name: str | None = None) -> Tensor:
        """The gated update ΔWˢ transposed to the base weight's (out x in) layout."""
        A, B, alpha = self._factors(adapter_name or self.active_adapter)
        parts = [self._gated_delta(*self._split(s, A, B, alpha)) for s in range(self.splits)]
        return torch.cat(parts, dim=1).T if self.splits > 1 else parts[0].T

    def forward(self, x: Tensor) -> Tensor:
        if self.disable_adapters or self.merged_adapters:
            return self.base_layer(x)
        cfg = self.config
        A, B, alpha = self._factors(self.active_adapter)
        xd = nn.functional.dropout(x, self.dropout_p, self.training)
        if self._low_rank_path():
            y = self.base_layer(x)
            delta = _split_drop_path(
                self._delta_output(xd, A, B, alpha), cfg.adapter_drop_path, self.splits,
                self.training,
            )  # fmt: skip
            return y + delta.to(y.dtype)
        recompute = cfg.recompute and torch.is_grad_enabled()
        y = self.base_layer(x)
        if self.splits == 1:
            d = self._checkpointed(recompute, xd, A, B, alpha)
            return y + _split_drop_path(d, cfg.adapter_drop_path, 1, self.training).to(y.dtype)
        # A fused q|k|v linear: one split at a time, each in its own checkpoint (as the official
        # separate q, k, v linears), so at most one split's ΔW, distances and gate are alive, in
        # the forward and in the backward's recomputation. Each split's output is added into its
        # slice of the base output in place, without the copy a concatenation would make.
        m = self.out_features // self.splits
        for s in range(self.splits):
            d = self._checkpointed(recompute, xd, *self._split(s, A, B, alpha))
            d = _split_drop_path(d, cfg.adapter_drop_path, 1, self.training)
            y = _AddIntoSlice.apply(y, d.to(y.dtype), s * m)
        return y

    def _checkpointed(self, recompute: bool, *args) -> Tensor:
        if recompute:
            return checkpoint(self._delta_output, *args, use_reentrant=False)
        return self._delta_output(*args)

    # ---------------------------------------------------------------- merging
    @torch.no_grad()
    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Add ΔWˢᵀ of each adapter into ``base_layer.weight``."""
        for name in adapter_names or [self.active_adapter]:
            if name in self.merged_adapters:
                continue
            delta = self.get_delta_weight(name).to(self.base_layer.weight.dtype)
            if safe_merge and not torch.isfinite(delta).all():
                raise ValueError(f"adapter {name!r} has non-finite values; merge refused")
            self.base_layer.weight.add_(delta)
            self.merged_adapters.append(name)

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract every merged adapter again (restores W0 up to rounding)."""
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            self.base_layer.weight.sub_(self.get_delta_weight(name).to(self.base_layer.weight))

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"in={self.in_features}, out={self.out_features}, splits={self.splits}, r={c.r}, "
            f"kernel={c.kernel}, sparsity={c.sparsity}, gate={c.gate}, recompute={c.recompute}"
        )
