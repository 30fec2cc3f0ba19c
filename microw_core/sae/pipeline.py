"""Train SAEs on a stored run and keep them in the store: what `microw train` and the app call."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from typing import Callable

from ..capture import open_run
from ..errors import InvalidInputError, SAEConfigError
from ..model import load_model
from ..store import Store, safe_name
from .base import SAE
from .data import heldout_split, run_rows
from .evaluate import evaluate_on_split
from .io import save_sae
from .trainer import Progress, SAETrainer, TrainConfig


@dataclass
class TrainResult:
    name: str
    sae: SAE
    metrics: dict             # held-out metrics plus tokens_per_s and seconds of training
    history: list[dict]       # training curve, one record per log step
    complete: bool = True     # False: stopped early; resume with resume=True


def default_name(cfg: TrainConfig, run: str, layer: str, d_in: int) -> str:
    sae_cfg = cfg.sae_config(d_in)
    sparsity = f"-k{sae_cfg.k}" if sae_cfg.k is not None else ""
    return safe_name(f"{run}-{layer}-{cfg.arch}-{sae_cfg.width}{sparsity}")


def train_sae(store: Store, run: str, layer: str, cfg: TrainConfig, progress: Progress | None = None,
              name: str | None = None, lm=None, resume: bool = False,
              should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train one SAE on run `run`'s activations at `layer`, evaluate on held-out tokens, save it."""
    return train_saes(store, run, layer, [cfg], progress, [name] if name else None, lm, resume, should_stop)[0]


def train_saes(store: Store, run: str, layer: str, configs: list[TrainConfig], progress: Progress | None = None,
               names: list[str] | None = None, lm=None, resume: bool = False,
               should_stop: Callable[[], bool] | None = None) -> list[TrainResult]:
    """Train several SAEs (e.g. a sweep of k) in one pass over the data; see train_sae.

    The last `eval_tokens` rows of the run are never trained on; metrics come from them, and with
    `lm` also CE loss / KL with the SAE spliced in, on documents wholly inside that tail.
    """
    activations = open_run(store, run)
    d_in = activations.d_model(layer)
    if names is not None and len(names) != len(configs):
        raise InvalidInputError(f"Give one name per SAE ({len(configs)}), or none.")
    names = [safe_name(n) for n in names] if names else [default_name(c, run, layer, d_in) for c in configs]
    split = heldout_split(activations.tokens, configs[0].eval_tokens)
    checkpoint = (store, f"checkpoints/{names[0]}")  # outside saes/: not an SAE until it is saved
    trainer = SAETrainer(configs, d_in, layer=layer, model=activations.model, run=activations.name)
    trained = trainer.fit(lambda: run_rows(activations, layer, 0, split.train_tokens), progress,
                          checkpoint=checkpoint, resume=resume, should_stop=should_stop)
    results = []
    for name, item in zip(names, trained):
        if not item.complete:
            results.append(TrainResult(name, item.sae, {}, item.history, complete=False))
            continue
        start = time.perf_counter()
        metrics = evaluate_on_split(item.sae, activations, layer, split, lm)
        metrics.update(train_tokens=split.train_tokens,
                       tokens_per_s=item.history[-1]["tokens"] / max(trainer.seconds, 1e-9),
                       seconds=trainer.seconds, eval_seconds=time.perf_counter() - start)
        save_sae(store, name, item.sae, metrics, training={"config": asdict(item.config), "history": item.history})
        results.append(TrainResult(name, item.sae, metrics, item.history))
    if all(r.complete for r in results):
        shutil.rmtree(store.path("checkpoints", names[0]), ignore_errors=True)
    return results


# ----- what the CLI calls -------------------------------------------------------------------------

TRAIN_KEYS = ("sae", "explained_variance", "l0", "dead_fraction", "dense_fraction", "ce_loss_recovered", "kl",
              "tokens_per_s", "seconds")


def train_command(store: Store, run: str, layer: str, arch: str = "topk", width: int | None = None,
                  k: int | None = None, l1: float | None = None, tokens: int | None = None, name: str | None = None,
                  model: str | None = None, splice: bool = True, device: str = "auto",
                  progress: Progress | None = None) -> dict:
    """`microw train`: train, evaluate on held-out tokens and save; returns the CLI's JSON keys.

    `l1` is the sparsity penalty (L1 for relu, L0 for jumprelu). With `splice`, the SAE is also
    spliced into `model` (default: the run's model) for CE loss recovered and KL.
    """
    if l1 is not None and arch not in ("relu", "jumprelu"):
        raise SAEConfigError(f"--l1 sets the sparsity penalty of relu and jumprelu SAEs; {arch} SAEs use --k.")
    penalty = {"l1_coeff": l1} if arch == "relu" else {"l0_coeff": l1} if arch == "jumprelu" else {}
    length = {"tokens": tokens} if tokens is not None else {}
    cfg = TrainConfig(arch=arch, width=width, k=k, device=device, **penalty, **length)
    lm = load_model(model or open_run(store, run).model, device=device) if splice else None
    result = train_sae(store, run, layer, cfg, progress=progress, name=name, lm=lm)
    extra = ("mse", "shrinkage", "ce_loss_recovered_with_error", "kl_with_error", "train_tokens", "heldout_tokens")
    return {"sae": result.name} | {key: result.metrics.get(key) for key in (*TRAIN_KEYS[1:], *extra)}


def saes_command(store: Store) -> dict:
    """`microw saes`: every stored SAE with its settings and held-out metrics."""
    rows = []
    for item in store.list_saes():
        config, metrics = item.get("config") or {}, item.get("metrics") or {}
        row = {"name": item["name"], "bytes": item["bytes"]}
        row.update({key: config.get(key) for key in ("arch", "d_in", "width", "k", "layer", "model", "run")})
        row.update({key: metrics.get(key) for key in TRAIN_KEYS[1:]})
        if "error" in item:
            row["error"] = item["error"]
        rows.append(row)
    return {"saes": rows}
