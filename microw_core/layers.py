"""Layer names that read the same across architectures.

Aliases (`embed`, `resid_pre.{i}`, `resid_post.{i}`, `attn_out.{i}`, `mlp_out.{i}`, `final_norm`)
resolve to a real module of the model: `resid_pre.{i}` is the *input* of block i (a pre-forward
hook), every other alias is a module's output. Any dotted module name works as well.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import torch
from torch import nn

from .errors import LayerNotFoundError

# Child names used for the same role by different architectures.
_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
_MLP_NAMES = ("mlp", "feed_forward", "fc2")  # OPT has no mlp module: fc2 is the MLP's output projection
_FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")
ROOT = "model"  # alias for the whole model (input / output recorders)


@dataclass(frozen=True)
class LayerRef:
    """A resolved hook point: `pre` means the module's input is hooked, not its output."""

    name: str
    module_name: str
    module: nn.Module
    pre: bool = False


def _blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks: the longest ModuleList in the model."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if n_layers is not None:
        matching = [(n, m) for n, m in candidates if len(m) == n_layers]
        candidates = matching or candidates
    if not candidates:
        raise LayerNotFoundError(f"{type(model).__name__} has no list of transformer blocks; use dotted module names.")
    return max(candidates, key=lambda nm: (len(nm[1]), -nm[0].count(".")))


def _child(block: nn.Module, names: tuple[str, ...]) -> str | None:
    children = dict(block.named_children())
    return next((n for n in names if n in children), None)


def _final_norm(model: nn.Module, blocks_name: str) -> str | None:
    parent = blocks_name.rsplit(".", 1)[0] if "." in blocks_name else ""
    parent_module = model.get_submodule(parent)
    name = _child(parent_module, _FINAL_NORM_NAMES)
    return f"{parent}.{name}".lstrip(".") if name else None


def layer_aliases(model: nn.Module) -> dict[str, LayerRef]:
    """Every canonical alias of `model`, resolved to a module."""
    blocks_name, blocks = _blocks(model)
    aliases: dict[str, LayerRef] = {}
    embed = model.get_input_embeddings()
    embed_name = next(n for n, m in model.named_modules() if m is embed)
    aliases["embed"] = LayerRef("embed", embed_name, embed)
    for i, block in enumerate(blocks):
        block_name = f"{blocks_name}.{i}"
        aliases[f"resid_pre.{i}"] = LayerRef(f"resid_pre.{i}", block_name, block, pre=True)
        if (attn := _child(block, _ATTN_NAMES)) is not None:
            aliases[f"attn_out.{i}"] = LayerRef(f"attn_out.{i}", f"{block_name}.{attn}", block.get_submodule(attn))
        if (mlp := _child(block, _MLP_NAMES)) is not None:
            aliases[f"mlp_out.{i}"] = LayerRef(f"mlp_out.{i}", f"{block_name}.{mlp}", block.get_submodule(mlp))
        aliases[f"resid_post.{i}"] = LayerRef(f"resid_post.{i}", block_name, block)
    if (norm := _final_norm(model, blocks_name)) is not None:
        aliases["final_norm"] = LayerRef("final_norm", norm, model.get_submodule(norm))
    return aliases


def resolve_layer(model: nn.Module, name: str) -> LayerRef:
    """Resolve an alias or a dotted module name; unknown names list the closest matches."""
    if name == ROOT:
        return LayerRef(ROOT, "", model)
    aliases = layer_aliases(model)
    if name in aliases:
        return aliases[name]
    modules = dict(model.named_modules())
    if name in modules and name:
        return LayerRef(name, name, modules[name])
    known = list(aliases) + [n for n in modules if n]
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    n_blocks = len(_blocks(model)[1])
    raise LayerNotFoundError(
        f"Layer '{name}' does not exist in {type(model).__name__}.{hint} "
        f"Use an alias (resid_pre.i, resid_post.i, attn_out.i, mlp_out.i with i in 0..{n_blocks - 1}, embed, final_norm) "
        f"or a dotted module name from `microw layers --model ...`."
    )


def layer_index(name: str) -> int | None:
    """The block index in an alias like `resid_post.3`, else None."""
    match = re.fullmatch(r"(?:resid_pre|resid_post|attn_out|mlp_out)\.(\d+)", name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    parameters: int
    output_shape: tuple[int, ...] | None
    aliases: tuple[str, ...]


def first_tensor(value) -> torch.Tensor | None:
    """The hidden-state tensor inside a module output (tensor, tuple or ModelOutput)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    if isinstance(value, dict):  # ModelOutput is an OrderedDict of its non-None fields
        return next((v for v in value.values() if isinstance(v, torch.Tensor)), None)
    return None


def layer_catalogue(model: nn.Module, sample_input: dict[str, torch.Tensor]) -> list[LayerInfo]:
    """Every module with type, parameter count and output shape from one dry run on `sample_input`."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_modules():
        def record(mod, args, output, name=name):
            tensor = first_tensor(output)
            if tensor is not None and name not in shapes:
                shapes[name] = tuple(tensor.shape)
        handles.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(**sample_input)
    finally:
        for handle in handles:
            handle.remove()
    by_module: dict[str, list[str]] = {}
    for alias, ref in layer_aliases(model).items():
        by_module.setdefault(ref.module_name, []).append(alias)
    return [
        LayerInfo(
            name=name or ROOT,
            type=type(module).__name__,
            parameters=sum(p.numel() for p in module.parameters()),
            output_shape=shapes.get(name),
            aliases=tuple(by_module.get(name, [])),
        )
        for name, module in model.named_modules()
    ]


def alias_shapes(model: nn.Module, catalogue: list[LayerInfo], d_model: int) -> dict[str, dict]:
    """Each canonical alias with its module, whether it hooks the input (pre) and its output shape."""
    shapes = {info.name: info.output_shape for info in catalogue}
    out = {}
    for alias, ref in layer_aliases(model).items():
        shape = shapes.get(ref.module_name or "model")
        if ref.pre and shape:  # a block's input has the residual stream's shape
            shape = (*shape[:2], d_model)
        out[alias] = {"module": ref.module_name, "pre": ref.pre, "shape": list(shape) if shape else None}
    return out
