"""Loading checkpoints of the official N² code (github.com/sunjss/N2) into this package's models.

Two layout differences besides the parameter names:

* The displacement heads output ``k·q`` values per pseudo node. Here they are read as ``(k, q)``
  (row ``c·q + j`` is coordinate ``j`` of piece ``c``); the official code reads them as ``(q, k)``
  (row ``j·k + c``). The maths is the same; an official checkpoint needs that row permutation of
  the two displacement ``Linear`` layers (weight rows and bias).
* Each ψ's λ is a ``(k,)`` vector here and a ``(k, 1, 1)`` tensor ("lambda_copies") there.

The official model also builds two modules it never uses in forward (``edge_wise_ff`` and
``time_embedding``); they are dropped on import and written as zeros on export. The official model
returns log-probabilities for single-label tasks (``log_softmax``), this package's models return
logits: ``log_softmax(model(...), -1)`` equals the official output.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from labcore.cli import UserError
from n2gnn.model import N2Config, N2Graph, N2Node

__all__ = [
    "from_official_state_dict",
    "load_official",
    "official_config",
    "read_official_checkpoint",
    "to_official_state_dict",
]

_CELL = "node_state_updater."
# official name -> this package's name (λ tensors and Linear/LayerNorm parameter stems)
_PSI = {
    "out_ff": "psi_out",
    _CELL + "collection1": "cell.psi.collect1",
    _CELL + "pnode_agg1.pnode_agg": "cell.psi.refine1",
    _CELL + "inspection": "cell.psi.inspect",
    _CELL + "collection2": "cell.psi.collect2",
    _CELL + "pnode_agg2.pnode_agg": "cell.psi.refine2",
    _CELL + "dispatch": "cell.psi.dispatch",
}
_MODULES = {
    "node_state_interface.0": "encode_state.0",
    "feat_ff.0": "encode_message.0",
    _CELL + "pnode_agg1.glob2disp.0": "cell.disp1.0",
    _CELL + "pnode_agg1.glob2value.0": "cell.val1.0",
    _CELL + "hstate_interface.0": "cell.local.0",
    _CELL + "pnode_agg2.glob2disp.0": "cell.disp2.0",
    _CELL + "pnode_agg2.glob2value.0": "cell.val2.0",
    _CELL + "feat_ff.0": "cell.out.0",
    _CELL + "phidden_norm": "cell.norm_pseudo1",
    _CELL + "hidden_norm": "cell.norm_state1",
    _CELL + "pout_norm": "cell.norm_pseudo2",
    _CELL + "out_norm": "cell.norm_state2",
    _CELL + "feat_norm": "cell.norm_message",
    "pnode_agg.0": "pool.0",  # N2Graph readout
    "out_norm": "pool_norm",  # N2Graph readout
}
_TENSORS = {"pnode_state": "pseudo", "class_neuron": "classes"}
_UNUSED = tuple(
    _CELL + n for n in ("edge_wise_ff.weight", "edge_wise_ff.bias", "time_embedding.weight")
)
_DISPLACEMENT = ("cell.disp1.0", "cell.disp2.0")


def _rename(name: str) -> str | None:
    """This package's parameter name for an official one (None for the unused modules)."""
    if name in _UNUSED:
        return None
    if name in _TENSORS:
        return _TENSORS[name]
    stem, _, leaf = name.rpartition(".")
    if leaf == "lambda_copies" and stem in _PSI:
        return f"{_PSI[stem]}.weight"
    if stem in _MODULES and leaf in ("weight", "bias"):
        return f"{_MODULES[stem]}.{leaf}"
    return ""


def _qk_to_kq(t: Tensor, k: int, q: int) -> Tensor:
    """Rows ``j·k + c`` (official ``(q, k)``) -> rows ``c·q + j`` (here ``(k, q)``)."""
    return t.reshape(q, k, *t.shape[1:]).transpose(0, 1).reshape(k * q, *t.shape[1:])


def _kq_to_qk(t: Tensor, k: int, q: int) -> Tensor:
    return t.reshape(k, q, *t.shape[1:]).transpose(0, 1).reshape(k * q, *t.shape[1:])


def _strip(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """The tensors of a state dict, without ``nn.DataParallel``'s ``module.`` prefix."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]  # a whole official checkpoint file
    out = {}
    for name, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise UserError(f"not a state dict: entry {name!r} is a {type(value).__name__}")
        out[re.sub(r"^module\.", "", name)] = value
    return out


def official_config(
    state_dict: Mapping[str, Any],
    *,
    num_steps: int,
    dropout: float = 0.0,
    edge_dim: int | None = None,
) -> N2Config:
    """The :class:`~n2gnn.model.N2Config` of an official state dict.

    Widths are read from the tensors (``d``, ``q``, ``k``, ``np``, classes, class pieces, input
    width). What the file does not hold must be given: ``num_steps`` (the official ``--nlayers``,
    T) and, for datasets with edge features, ``edge_dim`` (the official input is ``d_in + d_ein``
    wide; ``in_channels`` becomes the rest). ``dropout`` only matters for training.
    """
    sd = _strip(state_dict)
    need = ("pnode_state", "class_neuron", "out_ff.lambda_copies", "feat_ff.0.weight")
    missing = [n for n in need if n not in sd]
    if missing:
        if "pnode_state" in sd and "class_neuron" not in sd:
            raise UserError(
                "regression checkpoints (task_type='reg': no class nodes, no output ψ) are not "
                "supported: the released model has no regression head"
            )
        raise UserError(f"not an official N² state dict: missing {', '.join(missing)}")
    _, num_pseudo, state = sd["pnode_state"].shape
    class_pieces, out_channels, _ = sd["class_neuron"].shape
    pieces = sd["out_ff.lambda_copies"].shape[0]
    hidden, d_in = sd["feat_ff.0.weight"].shape
    in_channels = d_in - (edge_dim or 0)
    if in_channels < 1:
        raise UserError(f"edge_dim={edge_dim} leaves no node features (input width {d_in})")
    return N2Config(
        in_channels=in_channels,
        out_channels=out_channels,
        edge_dim=edge_dim,
        hidden=hidden,
        state=state,
        pieces=pieces,
        num_pseudo=num_pseudo,
        num_steps=num_steps,
        dropout=dropout,
        class_pieces=class_pieces,
    )


def from_official_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """Rename, reshape and permute an official state dict into this package's layout.

    Accepts the state dict, a whole official checkpoint (its ``"state_dict"`` entry) or a
    ``DataParallel`` one (``module.`` prefixes). The result loads with ``strict=True`` into the
    :class:`N2Node` / :class:`N2Graph` built from :func:`official_config`.
    """
    sd = _strip(state_dict)
    k = sd["out_ff.lambda_copies"].shape[0] if "out_ff.lambda_copies" in sd else None
    q = sd["pnode_state"].shape[-1] if "pnode_state" in sd else None
    out: dict[str, Tensor] = {}
    unknown = []
    for name, value in sd.items():
        new = _rename(name)
        if new is None:
            continue
        if not new:
            unknown.append(name)
            continue
        if new.endswith(".weight") and name.endswith("lambda_copies"):
            value = value.reshape(-1)
        elif new.rpartition(".")[0] in _DISPLACEMENT:
            if k is None or q is None:
                raise UserError("not an official N² state dict: no pnode_state / out_ff")
            value = _qk_to_kq(value, k, q)
        out[new] = value.clone()
    if unknown:
        raise UserError(f"unknown keys in the official state dict: {', '.join(sorted(unknown))}")
    return out


def to_official_state_dict(model: N2Node | N2Graph) -> dict[str, Tensor]:
    """The inverse of :func:`from_official_state_dict` (unused official modules as zeros).

    Only for the code's layout (``concat_pseudo_messages=True``, ``residual="code"``).
    """
    c = model.config
    if not c.concat_pseudo_messages or c.residual != "code":
        raise ValueError("only models in the official code's layout can be exported")
    back = {v: k for k, v in _MODULES.items()}
    psi = {v: k for k, v in _PSI.items()}
    tensors = {v: k for k, v in _TENSORS.items()}
    out: dict[str, Tensor] = {}
    for name, value in model.state_dict().items():
        stem, _, leaf = name.rpartition(".")
        value = value.detach().clone()
        if name in tensors:
            out[tensors[name]] = value
        elif stem in psi:
            out[f"{psi[stem]}.lambda_copies"] = value.view(-1, 1, 1)
        else:
            if stem in _DISPLACEMENT:
                value = _kq_to_qk(value, c.pieces, c.state)
            out[f"{back[stem]}.{leaf}"] = value
    d = c.hidden
    out[_UNUSED[0]] = torch.zeros(d, d)
    out[_UNUSED[1]] = torch.zeros(d)
    out[_UNUSED[2]] = torch.zeros(6, d)
    return out


def read_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict in an official checkpoint file (``neuron_best.pth`` or a bare state dict).

    The official trainer also pickles RNG states (numpy arrays, Python tuples); they are read with
    ``torch.load(weights_only=True)`` and only numpy's array types allowed, then dropped.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "No such file", str(path))
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    allowed = [_reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated or not a torch file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(obj, Mapping):
        raise UserError(f"cannot read checkpoint {path}: holds a {type(obj).__name__}, not a dict")
    try:
        return _strip(obj)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def load_official(
    source: str | Path | Mapping[str, Any],
    *,
    num_steps: int,
    dropout: float = 0.0,
    edge_dim: int | None = None,
) -> N2Node | N2Graph:
    """An :class:`N2Node` or :class:`N2Graph` holding the weights of an official checkpoint.

    ``source`` is a file path or a state dict. The level comes from the file: the official
    ``N2Graph`` has a pseudo-node pooling layer (``pnode_agg``), ``N2Node`` has none. The model
    returns logits; ``log_softmax(logits, -1)`` is what the official single-label model returns.
    """
    sd = read_official_checkpoint(source) if isinstance(source, str | Path) else _strip(source)
    cfg = official_config(sd, num_steps=num_steps, dropout=dropout, edge_dim=edge_dim)
    model = (N2Graph if "pnode_agg.0.weight" in sd else N2Node)(cfg)
    ours = from_official_state_dict(sd)
    try:
        model.load_state_dict(ours, strict=True)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise UserError(f"official state dict does not fit the inferred model: {msg}") from None
    return model
