"""Held-out evaluation: reconstruction statistics, and the SAE spliced into the model.

Everything here runs on tokens the SAE never trained on (the tail of the run, see data.heldout_split).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F

from ..capture import open_run
from ..errors import InvalidInputError
from ..hooks import FunctionController, HookContext
from ..store import Store
from .base import SAE
from .data import HeldOutSplit, heldout_documents, heldout_split, run_rows

DENSE_DENSITY = 0.1                   # a latent firing on more than 10% of tokens is "dense"
DENSITY_BINS = torch.arange(-7.0, 0.01, 0.25)  # log10 firing-rate histogram edges


@torch.no_grad()
def reconstruction_metrics(sae: SAE, chunks: Iterable[torch.Tensor], batch_size: int = 4096,
                           device: str | torch.device | None = None) -> dict:
    """MSE, explained variance, L0, dead / dense fractions, shrinkage and the log-density histogram.

    dead_fraction counts latents that never fired on these tokens; explained_variance is
    1 - sum |x - x_hat|^2 / sum |x - mean x|^2 over all of them.
    """
    device = torch.device(device) if device else sae.W_enc.device
    sae = sae.to(device)
    d, width = sae.cfg.d_in, sae.cfg.width
    n, sq_error, sq_norm, l0, norm_ratio = 0, 0.0, 0.0, 0.0, 0.0
    total = torch.zeros(d, dtype=torch.float64, device=device)
    fires = torch.zeros(width, dtype=torch.long, device=device)
    for chunk in chunks:
        for x in chunk.split(batch_size):
            x = x.to(device)
            f = sae.encode(x)
            x_hat = sae.decode(f)
            active = f > 0
            n += len(x)
            sq_error += float((x_hat - x).double().pow(2).sum())
            sq_norm += float(x.double().pow(2).sum())
            total += x.double().sum(0)
            l0 += float(active.sum())
            fires += active.sum(0)
            norm_ratio += float((x_hat.norm(dim=1) / x.norm(dim=1).clamp_min(1e-12)).double().sum())
    if n == 0:
        raise InvalidInputError("There are no held-out tokens to evaluate on; capture a longer run.")
    variance = sq_norm - float(total.pow(2).sum()) / n
    density = fires.double().cpu() / n
    log_density = density[density > 0].log10()
    counts = torch.histogram(log_density.float(), bins=DENSITY_BINS).hist if log_density.numel() else None
    return {
        "tokens": n,
        "mse": sq_error / (n * d),
        "explained_variance": 1.0 - sq_error / max(variance, 1e-12),
        "l0": l0 / n,
        "dead_fraction": float((fires == 0).double().mean()),
        "dense_fraction": float((density > DENSE_DENSITY).double().mean()),
        "shrinkage": norm_ratio / n,  # mean |x_hat| / |x|: below 1 means reconstructions are shrunk
        "log_density_hist": {
            "edges": DENSITY_BINS.tolist(),
            "counts": counts.long().tolist() if counts is not None else [0] * (len(DENSITY_BINS) - 1),
            "dead": int((fires == 0).sum()),
        },
    }


# ----- splicing into the model ---------------------------------------------------------------------


def _replaced_positions(ctx: HookContext, activation: torch.Tensor, special: torch.Tensor) -> torch.Tensor:
    """Real, non-special tokens: the positions the SAE was trained on (capture drops BOS / padding)."""
    where = torch.ones(activation.shape[:2], dtype=torch.bool, device=activation.device)
    if ctx.attention_mask is not None:
        where &= ctx.attention_mask.to(activation.device).bool()
    if ctx.input_ids is not None:
        where &= ~torch.isin(ctx.input_ids.to(activation.device), special.to(activation.device))
    return where


def splice_fn(sae: SAE, mode: str, special_ids: Iterable[int]):
    """fn(ctx, act) for FunctionController: mode "sae" (x_hat), "sae+error" (x_hat + x - x_hat) or "zero"."""
    special = torch.tensor(sorted(special_ids), dtype=torch.long)

    def replace(ctx: HookContext, activation: torch.Tensor) -> torch.Tensor:
        where = _replaced_positions(ctx, activation, special)
        x = activation[where].float()
        if mode == "zero":
            new = torch.zeros_like(x)
        else:
            x_hat = sae(x)
            new = x_hat + (x - x_hat) if mode == "sae+error" else x_hat
        out = activation.clone()
        out[where] = new.to(activation.dtype)
        return out

    return replace


@torch.no_grad()
def splice_metrics(lm, sae: SAE, layer: str, texts: list[str], batch_size: int = 8,
                   max_length: int = 256) -> dict:
    """CE loss and KL to the clean model with the SAE in place of `layer`, with and without its error.

    ce_loss_recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean), where zero ablation replaces the
    same positions with zeros. Next-token losses count every real token that predicts a real token.
    """
    sae = sae.to(lm.device)
    if not texts:
        raise InvalidInputError("There are no held-out texts to evaluate the spliced SAE on; capture a longer run.")
    modes = ("sae", "sae+error", "zero")
    ce = {m: 0.0 for m in ("clean", *modes)}
    kl = {m: 0.0 for m in modes}
    count = 0
    for start in range(0, len(texts), batch_size):
        batch = lm.tokenize(texts[start : start + batch_size], max_length=max_length)
        labels = batch["input_ids"][:, 1:]
        mask = (batch["attention_mask"][:, 1:] * batch["attention_mask"][:, :-1]).bool()
        clean = lm.forward(**batch).logits[:, :-1][mask].float().log_softmax(-1)
        ce["clean"] += float(F.nll_loss(clean, labels[mask], reduction="sum"))
        for mode in modes:
            with lm.hooks(FunctionController(layer, splice_fn(sae, mode, lm.special_token_ids))):
                logits = lm.forward(**batch).logits[:, :-1][mask].float().log_softmax(-1)
            ce[mode] += float(F.nll_loss(logits, labels[mask], reduction="sum"))
            kl[mode] += float(F.kl_div(logits, clean, log_target=True, reduction="sum"))
        count += int(mask.sum())
    ce = {m: v / count for m, v in ce.items()}
    kl = {m: max(v / count, 0.0) for m, v in kl.items()}  # float rounding can dip just below zero

    def recovered(mode: str) -> float:
        gap = ce["zero"] - ce["clean"]
        return (ce["zero"] - ce[mode]) / gap if abs(gap) > 1e-9 else math.nan

    return {
        "ce_tokens": count,
        "ce_clean": ce["clean"], "ce_sae": ce["sae"], "ce_zero_ablation": ce["zero"],
        "ce_loss_recovered": recovered("sae"), "kl": kl["sae"],
        "ce_loss_recovered_with_error": recovered("sae+error"), "kl_with_error": kl["sae+error"],
    }


def evaluate_on_split(sae: SAE, activations, layer: str, split: HeldOutSplit, lm=None, max_texts: int = 64) -> dict:
    """Reconstruction metrics on the held-out rows; with `lm`, splice metrics on the held-out documents."""
    metrics = reconstruction_metrics(sae, run_rows(activations, layer, split.train_tokens))
    metrics["heldout_tokens"] = split.eval_tokens
    if lm is not None:
        texts = activations.texts()
        docs = heldout_documents(activations, split)[:max_texts]
        max_length = activations.manifest.get("config", {}).get("max_length", 256)
        metrics.update(splice_metrics(lm, sae, layer, [texts[i] for i in docs], max_length=max_length))
    return metrics


def evaluate_sae(lm, sae: SAE, store: Store, run: str, layer: str, eval_tokens: int | None = None,
                 max_texts: int = 64) -> dict:
    """All held-out metrics of `sae` on run `run` (the split training used); `lm=None` skips splicing."""
    activations = open_run(store, run)
    return evaluate_on_split(sae, activations, layer, heldout_split(activations.tokens, eval_tokens), lm, max_texts)
