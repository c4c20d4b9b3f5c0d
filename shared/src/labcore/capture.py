"""Capture activations of any ``torch.nn.Module`` by module path, with hooks that always go away.

A module path is what ``model.named_modules()`` prints (``"down_blocks.0.resnets.1.conv2"``);
``""`` is the model itself. :class:`ActivationCapture` registers

- a forward hook per requested *output*: the module's return value, unwrapped to one tensor
  (a tuple or list gives its first element, an object or mapping with ``sample`` gives that,
  recursively), and
- a forward pre-hook per requested *input*: the first positional tensor argument (or, when the
  module is called with keywords only, the first tensor keyword argument),

and keeps only those tensors: detached, optionally passed through ``transform``, cast to
``dtype`` (floating tensors only) and moved to ``device``. A tensor that the cast and the move
left in place is cloned (``clone=True``), so a later in-place update inside the network cannot
change what was stored. If a module runs several times in one forward, the last call wins.

Every hook is removed when the ``with`` block ends, also when it ends with an exception.

**Early stop.** With ``stop_early=True`` the hook of the last requested module to fire raises an
internal :class:`StopForward`; :meth:`ActivationCapture.run` and the context manager swallow it
(any other exception passes through). A forward then costs only the part of the network that
runs before the last requested module: asking for an early down-block activation of a U-Net does
not run its up-stage. "Last" is counted per forward of the root model (a pre-hook on the root
resets the count), so a capture object can be reused for several forwards.

Example::

    with ActivationCapture(unet, outputs=["down_blocks.0.resnets.0"], stop_early=True) as cap:
        cap.run(unet, latents, t, encoder_hidden_states=text)
    feats = cap.outputs["down_blocks.0.resnets.0"]

torch only; no model library is imported here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from labcore.cli import UserError

__all__ = ["ActivationCapture", "StopForward", "capture", "resolve_dtype", "unwrap_tensor"]

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
           "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16}  # fmt: skip
_INPUT_NAMES = ("hidden_states", "sample", "input", "x")


class StopForward(Exception):
    """Raised inside a hook to end a forward once every requested activation is stored.

    Internal: :class:`ActivationCapture` swallows it. It only escapes if the forward is run
    outside the ``with`` block that owns the capture (which cannot happen: hooks are gone then).
    """


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"fp16"``/``"bf16"``/``"fp32"`` (or a ``torch.dtype``, or ``None``) to a ``torch.dtype``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise UserError(f"unknown dtype {dtype!r}; use one of fp32, fp16, bf16") from None


def unwrap_tensor(value: Any) -> torch.Tensor | None:
    """The one tensor a module's return value stands for (see the module docstring), or None."""
    while not isinstance(value, torch.Tensor):
        if isinstance(value, (tuple, list)):
            if not value:
                return None
            value = value[0]
        elif isinstance(value, Mapping) and "sample" in value:
            value = value["sample"]
        elif hasattr(value, "sample"):
            value = value.sample
        else:
            return None
    return value


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for a in args:
        t = unwrap_tensor(a)
        if t is not None:
            return t
    for name in _INPUT_NAMES:
        if isinstance(kwargs.get(name), torch.Tensor):
            return kwargs[name]
    for v in kwargs.values():
        if isinstance(v, torch.Tensor):
            return v
    return None


def _as_mapping(spec: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    if spec is None:
        return {}
    if isinstance(spec, str):
        return {spec: spec}
    if isinstance(spec, Mapping):
        return {str(k): str(v) for k, v in spec.items()}
    return {p: p for p in spec}


class ActivationCapture:
    """Store chosen module outputs/inputs of ``model`` during its forwards.

    Args:
        model: any ``nn.Module``.
        outputs: module paths whose outputs to keep; a sequence (keys = paths) or a mapping
            ``{key: path}``. Results land in :attr:`outputs` under those keys.
        inputs: the same for module inputs (forward pre-hooks); results in :attr:`inputs`.
        dtype: cast stored floating tensors (``"fp16"``, ``"bf16"``, ``"fp32"``, a torch dtype
            or None = keep).
        device: move stored tensors there (``"cpu"`` frees accelerator memory); None = keep.
        stop_early: end each forward as soon as every requested module has been stored.
        transform: optional ``f(key, tensor) -> tensor`` applied (under ``no_grad``) before the
            cast and the move, e.g. to reshape tokens or pool.
        select: optional ``f(key, raw_output) -> tensor | None`` that picks the tensor from a
            module's return value instead of :func:`unwrap_tensor` (e.g. the second element of
            a block that returns ``(text_states, image_states)``); outputs only.
        clone: copy tensors that the cast/move left aliasing the network's own storage.

    Raises:
        UserError: when a path is not a submodule of ``model`` (all unknown paths are named).
    """

    def __init__(
        self,
        model: nn.Module,
        outputs: Iterable[str] | Mapping[str, str] | None = None,
        inputs: Iterable[str] | Mapping[str, str] | None = None,
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        stop_early: bool = False,
        transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
        clone: bool = True,
        select: Callable[[str, Any], torch.Tensor | None] | None = None,
    ) -> None:
        self.model = model
        self.output_paths = _as_mapping(outputs)
        self.input_paths = _as_mapping(inputs)
        if not self.output_paths and not self.input_paths:
            raise UserError("nothing to capture: give at least one output or input module path")
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device) if device is not None else None
        self.stop_early = stop_early
        self.transform = transform
        self.clone = clone
        self.select = select
        self.modules = self._resolve({**self.output_paths, **self.input_paths}.values())
        self.outputs: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}
        self.stopped = False
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._pending: set[tuple[str, str]] = set()

    # -- set-up -----------------------------------------------------------------------------
    def _resolve(self, paths: Iterable[str]) -> dict[str, nn.Module]:
        found: dict[str, nn.Module] = {}
        unknown: list[str] = []
        for path in dict.fromkeys(paths):
            try:
                found[path] = self.model.get_submodule(path)
            except AttributeError:
                unknown.append(path)
        if unknown:
            names = [n for n, _ in self.model.named_modules()]
            hints = []
            for u in unknown[:3]:
                close = difflib.get_close_matches(u, names, n=1)
                if close:
                    hints.append(f"{u!r} -> did you mean {close[0]!r}?")
            hint = f" ({'; '.join(hints)})" if hints else ""
            raise UserError(
                f"unknown module path(s) in {type(self.model).__name__}: "
                f"{', '.join(repr(u) for u in unknown)}{hint}"
            )
        return found

    def _store(self, kind: str, key: str, tensor: torch.Tensor | None) -> None:
        if tensor is None:
            return
        with torch.no_grad():
            t = tensor.detach()
            if self.transform is not None:
                t = self.transform(key, t)
            moved = t.to(
                device=self.device,
                dtype=self.dtype if (self.dtype is not None and t.is_floating_point()) else None,
            )
            if self.clone and moved.data_ptr() == tensor.data_ptr():
                moved = moved.clone()
        (self.outputs if kind == "output" else self.inputs)[key] = moved
        self._pending.discard((kind, key))
        if self.stop_early and not self._pending:
            self.stopped = True
            raise StopForward

    def _reset_pending(self, *_: Any) -> None:
        self._pending = {("output", k) for k in self.output_paths}
        self._pending |= {("input", k) for k in self.input_paths}
        self.stopped = False

    def __enter__(self) -> ActivationCapture:
        if self._handles:
            raise RuntimeError("this ActivationCapture is already active")
        try:
            self._reset_pending()
            # registered first, so on the root it runs before any input hook of the root itself
            self._handles.append(self.model.register_forward_pre_hook(self._reset_pending))
            for key, path in self.input_paths.items():
                hook = self._input_hook(key)
                self._handles.append(
                    self.modules[path].register_forward_pre_hook(hook, with_kwargs=True)
                )
            for key, path in self.output_paths.items():
                self._handles.append(
                    self.modules[path].register_forward_hook(self._output_hook(key))
                )
        except BaseException:
            self.remove()
            raise
        return self

    def _input_hook(self, key: str):
        def hook(_module, args, kwargs):
            self._store("input", key, _first_input(args, kwargs))

        return hook

    def _output_hook(self, key: str):
        def hook(_module, _args, output):
            picked = self.select(key, output) if self.select is not None else unwrap_tensor(output)
            self._store("output", key, picked)

        return hook

    def remove(self) -> None:
        """Remove every hook this object registered (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.remove()
        return exc_type is not None and issubclass(exc_type, StopForward)

    # -- use --------------------------------------------------------------------------------
    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn(*args, **kwargs)`` (e.g. the model); None if the forward was stopped early.

        Hooks must be active (inside the ``with`` block). The pending set is reset first, so
        ``fn`` may be any callable that eventually runs the model (a pipeline step, a lambda).
        """
        if not self._handles:
            raise RuntimeError("ActivationCapture.run() needs the hooks: call it inside `with`")
        self._reset_pending()
        try:
            return fn(*args, **kwargs)
        except StopForward:
            return None

    def missing(self) -> list[str]:
        """Keys requested but not stored (the module never ran, or returned no tensor)."""
        out = [k for k in self.output_paths if k not in self.outputs]
        return out + [k for k in self.input_paths if k not in self.inputs]

    def clear(self) -> None:
        """Drop the stored tensors (e.g. between the images of a loop)."""
        self.outputs.clear()
        self.inputs.clear()

    def __repr__(self) -> str:
        return (f"ActivationCapture({type(self.model).__name__}, outputs={len(self.output_paths)}, "
                f"inputs={len(self.input_paths)}, dtype={self.dtype}, device={self.device}, "
                f"stop_early={self.stop_early}, active={bool(self._handles)})")  # fmt: skip


def capture(
    model: nn.Module,
    fn: Callable[[], Any],
    outputs: Iterable[str] | Mapping[str, str] | None = None,
    inputs: Iterable[str] | Mapping[str, str] | None = None,
    **options: Any,
) -> dict[str, torch.Tensor]:
    """One-shot: run ``fn()`` (which calls the model) under a capture; return what it stored.

    Inputs are returned under ``"<key>:input"`` when a key is also an output key, else under
    their key. ``options`` go to :class:`ActivationCapture`.
    """
    with ActivationCapture(model, outputs, inputs, **options) as cap:
        cap.run(fn)
    result = dict(cap.outputs)
    for k, v in cap.inputs.items():
        result[f"{k}:input" if k in result else k] = v
    return result
