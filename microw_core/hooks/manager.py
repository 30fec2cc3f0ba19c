"""Attaching hooks to modules: unpacking outputs, ordering, guaranteed removal."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ShapeMismatchError
from ..layers import LayerRef, first_tensor, resolve_layer
from .base import Controller, Detector, Hook, HookContext


@dataclass
class ForwardState:
    """Inputs of the forward in flight, captured by a pre-hook on the whole model."""

    input_ids: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    past_length: int | None = None  # tokens in the KV cache (None: no cache passed)


def track_forward_inputs(model: nn.Module) -> ForwardState:
    """Install (once) a pre-hook that remembers input_ids and attention_mask of each forward."""
    state = getattr(model, "_microw_forward_state", None)
    if state is None:
        state = ForwardState()

        def remember(module, args, kwargs):
            state.input_ids = kwargs.get("input_ids", args[0] if args else None)
            state.attention_mask = kwargs.get("attention_mask")
            # transformers 5 drops an all-ones mask (one unpadded row), so the cache is the reliable count.
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            state.past_length = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else None

        model.register_forward_pre_hook(remember, with_kwargs=True)
        model._microw_forward_state = state
    return state


def _replace_first(value, tensor: torch.Tensor):
    """`value` with its hidden-state tensor swapped for `tensor`, keeping the container type."""
    if isinstance(value, torch.Tensor):
        return tensor
    if isinstance(value, tuple):
        return (tensor, *value[1:])
    if isinstance(value, list):
        return [tensor, *value[1:]]
    if isinstance(value, dict):
        key = next(k for k, v in value.items() if isinstance(v, torch.Tensor))
        value[key] = tensor
        return value
    raise TypeError(f"cannot replace activation inside {type(value).__name__}")


class HookHandle:
    """Removes its torch hook; also a context manager (removal guaranteed on exceptions)."""

    def __init__(self, hook: Hook, ref: LayerRef, torch_handle):
        self.hook, self.ref, self._torch_handle = hook, ref, torch_handle

    def remove(self) -> None:
        if self._torch_handle is not None:
            self._torch_handle.remove()
            self._torch_handle = None

    def __enter__(self) -> "HookHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _context(ref: LayerRef, state: ForwardState, activation: torch.Tensor) -> HookContext:
    mask = state.attention_mask
    seq = activation.shape[1] if activation.dim() >= 2 else 0
    past = state.past_length or 0  # used when no mask was passed
    if mask is not None and mask.dim() == 2 and seq:
        past = max(mask.shape[1] - seq, 0)
        mask = mask[:, -seq:]  # during cached generation the mask covers past tokens too
    return HookContext(ref.name, ref.module, mask, state.input_ids, past)


def _apply(hook: Hook, ref: LayerRef, state: ForwardState, activation: torch.Tensor) -> torch.Tensor | None:
    flat_shape = None
    ids = state.input_ids
    if activation.dim() == 2 and ids is not None and ids.dim() == 2 and activation.shape[0] == ids.numel():
        # Some modules (OPT's fc2) work on [batch * seq, d]; hooks always see [batch, seq, d].
        flat_shape = activation.shape
        activation = activation.view(*ids.shape, -1)
    new = _run_hook(hook, ref, state, activation)
    return new if new is None or flat_shape is None else new.reshape(flat_shape)


def _run_hook(hook: Hook, ref: LayerRef, state: ForwardState, activation: torch.Tensor) -> torch.Tensor | None:
    ctx = _context(ref, state, activation)
    if isinstance(hook, Controller):
        new = hook.modify(ctx, activation)
        if new.shape != activation.shape:
            raise ShapeMismatchError(
                f"Controller {type(hook).__name__} on '{ref.name}' returned shape {tuple(new.shape)}, "
                f"expected {tuple(activation.shape)}; return a tensor shaped like its input."
            )
        return new.to(activation.dtype)
    hook.observe(ctx, activation)
    return None


def attach(model: nn.Module, hook: Hook) -> HookHandle:
    """Register `hook` on its layer; hooks on one module run in registration order."""
    if not isinstance(hook, (Detector, Controller)):
        raise TypeError("hooks must subclass microw_core.hooks.Detector or Controller")
    ref = resolve_layer(model, hook.layer)
    state = track_forward_inputs(model)
    if ref.pre:
        def pre_hook(module, args, kwargs):
            if args:
                new = _apply(hook, ref, state, args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = _apply(hook, ref, state, kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        handle = ref.module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        def forward_hook(module, args, output):
            tensor = first_tensor(output)
            if tensor is None:
                return None
            new = _apply(hook, ref, state, tensor)
            return None if new is None else _replace_first(output, new)

        handle = ref.module.register_forward_hook(forward_hook)
    return HookHandle(hook, ref, handle)


class HookSet:
    """Context manager that attaches hooks in order under a lock and always removes them."""

    def __init__(self, model: nn.Module, lock: threading.RLock, hooks: tuple[Hook, ...]):
        self.model, self.lock, self.hooks = model, lock, hooks
        self.handles: list[HookHandle] = []

    def __enter__(self) -> "HookSet":
        self.lock.acquire()
        try:
            for hook in self.hooks:
                self.handles.append(attach(self.model, hook))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            for handle in reversed(self.handles):
                handle.remove()
            self.handles.clear()
        finally:
            self.lock.release()
