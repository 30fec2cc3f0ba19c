"""SAELens's on-disk format: a folder with cfg.json and sae_weights.safetensors.

Weights use SAELens's names and layouts (W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec,
threshold for JumpReLU). cfg.json carries both the SAELens 6 fields (architecture, k, metadata) and
the older ones (activation_fn_str, activation_fn_kwargs, hook_name, model_name), so either version
loads it. A BatchTopK SAE exports as JumpReLU with its learned threshold, as SAELens saves them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import SAEConfigError
from .base import SAE, SAEConfig, build_sae

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
EXPORTED_ARCH = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu"}

# Our layer aliases and the TransformerLens hook names that SAELens configs use.
_HOOK_NAMES = [
    ("resid_pre.{i}", "blocks.{i}.hook_resid_pre"),
    ("resid_post.{i}", "blocks.{i}.hook_resid_post"),
    ("attn_out.{i}", "blocks.{i}.hook_attn_out"),
    ("mlp_out.{i}", "blocks.{i}.hook_mlp_out"),
    ("embed", "hook_embed"),
]


def _translate(name: str, source: int) -> str:
    """Map a name through _HOOK_NAMES from column `source` to the other column; unknown names pass."""
    for pair in _HOOK_NAMES:
        pattern = re.escape(pair[source]).replace(re.escape("{i}"), r"(\d+)")
        match = re.fullmatch(pattern, name)
        if match:
            return pair[1 - source].format(i=match.group(1) if match.groups() else "")
    return name


def hook_name(layer: str) -> str:
    return _translate(layer, 0)


def layer_name(hook: str) -> str:
    return _translate(hook, 1)


def export_saelens(sae: SAE, folder: str | Path) -> Path:
    """Write `sae` as a SAELens folder; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = sae.cfg
    arch = EXPORTED_ARCH[cfg.arch]
    weights = {name: getattr(sae, name).detach().float().cpu().contiguous()
               for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if arch == "jumprelu":
        weights["threshold"] = sae.threshold.detach().float().cpu().clamp_min(0).contiguous()
    hook = hook_name(cfg.layer)
    meta = {"model_name": cfg.model, "hook_name": hook}
    saelens_cfg = {
        "architecture": arch, "d_in": cfg.d_in, "d_sae": cfg.width, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
        "metadata": meta, **meta,
        "activation_fn_str": "topk" if arch == "topk" else "relu",
        "activation_fn_kwargs": {"k": cfg.k} if arch == "topk" else {},
        "microw": cfg.to_dict(),  # our own config, so a round trip restores e.g. batchtopk's k
    }
    if arch == "topk":
        saelens_cfg["k"] = cfg.k
    save_file(weights, str(folder / WEIGHTS_FILE))
    (folder / CFG_FILE).write_text(json.dumps(saelens_cfg, indent=2))
    return folder


def import_saelens(folder: str | Path) -> SAE:
    """Read a SAELens folder (standard / relu, topk, jumprelu) into an SAE with identical outputs."""
    folder = Path(folder)
    cfg_path, weights_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.exists() or not weights_path.exists():
        raise SAEConfigError(f"{folder} is not a SAELens SAE folder: it needs {CFG_FILE} and {WEIGHTS_FILE}.")
    raw = json.loads(cfg_path.read_text())
    weights = {k: v.float() for k, v in load_file(str(weights_path)).items()}
    _check_supported(raw, weights)
    meta = raw.get("metadata") or {}
    ours = raw.get("microw") or {}
    arch = _architecture(raw)
    k = raw.get("k") or (raw.get("activation_fn_kwargs") or {}).get("k")
    if arch == "jumprelu" and ours.get("arch") == "batchtopk":
        arch, k = "batchtopk", ours.get("k")
    cfg = SAEConfig(
        arch=arch, d_in=int(raw["d_in"]), width=int(raw["d_sae"]), k=int(k) if k is not None else None,
        layer=ours.get("layer") or layer_name(meta.get("hook_name") or raw.get("hook_name") or ""),
        model=ours.get("model") or meta.get("model_name") or raw.get("model_name") or "",
        run=ours.get("run", ""),
    )
    if not raw.get("apply_b_dec_to_input", True):
        # They encode x @ W_enc + b_enc; we encode (x - b_dec) @ W_enc + b_enc', so fold b_dec in.
        weights["b_enc"] = weights["b_enc"] + weights["b_dec"] @ weights["W_enc"]
    sae = build_sae(cfg)
    expected = set(sae.state_dict())
    if set(weights) != expected:
        raise SAEConfigError(f"{weights_path} holds {sorted(weights)}, but a {raw.get('architecture')} SAE "
                             f"needs {sorted(expected)}.")
    try:
        sae.load_state_dict(weights)
    except RuntimeError as e:
        raise SAEConfigError(f"The weights in {weights_path} do not match cfg.json's d_in / d_sae ({e}).") from None
    return sae.eval()


def _architecture(raw: dict) -> str:
    arch = raw.get("architecture", "standard")
    activation = raw.get("activation_fn_str") or raw.get("activation_fn") or "relu"
    if arch == "standard":
        return "topk" if activation == "topk" else "relu"
    if arch in ("topk", "jumprelu"):
        return arch
    raise SAEConfigError(f"SAELens architecture '{arch}' is not supported; microw imports standard (ReLU), "
                         "topk and jumprelu SAEs (BatchTopK SAEs are saved by SAELens as jumprelu).")


def _check_supported(raw: dict, weights: dict[str, torch.Tensor]) -> None:
    if raw.get("normalize_activations") not in (None, False, "none"):
        raise SAEConfigError(
            f"This SAE normalises its inputs at run time ({raw['normalize_activations']}), which microw does not do; "
            "fold the scaling into the weights first (SAELens: sae.fold_activation_norm_scaling_factor)."
        )
    if raw.get("rescale_acts_by_decoder_norm"):
        raise SAEConfigError("This TopK SAE rescales latents by decoder norms, which microw does not support; "
                             "fold the decoder norms into the encoder first (SAELens: sae.fold_W_dec_norm).")
    scale = weights.pop("scaling_factor", None)
    if scale is not None and not torch.allclose(scale, torch.ones_like(scale)):
        raise SAEConfigError("This SAE has a fine-tuning scaling factor, which microw does not support.")
    if raw.get("reshape_activations", "none") != "none":
        raise SAEConfigError("Only SAEs on whole hidden states are supported (this one reshapes attention heads).")
