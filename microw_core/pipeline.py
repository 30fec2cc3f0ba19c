"""Job functions for the app and the CLI: capture, training, feature pass, and the one-click demo.

Each `*_task` returns a `fn(report, should_stop)` for `jobs.start_job`; the work itself is the
same library call the CLI makes. `run_demo_pipeline` chains capture -> SAE -> features on the
demo model with budgets that finish in under two minutes on two idle CPU cores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from .capture import CaptureConfig, CaptureProgress, capture
from .datasets import DatasetSpec
from .features import FeatureConfig, compute_features
from .model import LanguageModel, load_model
from .sae import TrainConfig, load_sae
from .sae.pipeline import train_sae
from .store import Store

Report = Callable[..., None]
ShouldStop = Callable[[], bool]


def _scaled(report: Report, start: float, end: float) -> Report:
    """A report callback mapping a stage's 0..1 progress onto start..end of the whole."""
    def scaled(progress: float, message: str = "", metrics: dict | None = None, eta_s: float | None = None) -> None:
        report(start + (end - start) * progress, message, metrics)  # the job estimates the overall ETA
    return scaled


def _token_progress(report: Report, verb: str) -> Callable[[CaptureProgress], None]:
    def progress(p: CaptureProgress) -> None:
        total = f" / {p.total:,}" if p.total else ""
        message = f"{verb} {p.tokens:,}{total} tokens · {p.tokens_per_s:,.0f} tokens/s"
        report(p.tokens / p.total if p.total else 0.0, message, eta_s=p.eta_s)
    return progress


def capture_task(lm: LanguageModel, dataset: DatasetSpec | str | dict, config: CaptureConfig, store: Store,
                 run: str | None = None):
    """A job function capturing `config.layers` of `lm` over `dataset` into run `run`."""
    def fn(report: Report, should_stop: ShouldStop) -> dict:
        return capture(lm, dataset, config, store, run=run, progress=_token_progress(report, "Captured"),
                       should_stop=should_stop)
    return fn


def _train_progress(report: Report, steps: int) -> Callable[[dict], None]:
    def progress(record: dict) -> None:
        done = record["step"] >= steps
        message = ("Evaluating on held-out tokens…" if done else
                   f"Step {record['step']:,} / {steps:,} · explained variance {record['explained_variance']:.3f} · "
                   f"L0 {record['l0']:.1f} · {record['tokens_per_s']:,.0f} tokens/s")
        report(record["step"] / steps, message, metrics=record)
    return progress


def train_task(store: Store, run: str, layer: str, config: TrainConfig, name: str | None = None,
               lm: LanguageModel | None = None):
    """A job function training (and evaluating, with `lm` also by CE loss) one SAE on a stored run."""
    def fn(report: Report, should_stop: ShouldStop) -> dict:
        result = train_sae(store, run, layer, config, progress=_train_progress(report, config.steps), name=name,
                           lm=lm, should_stop=should_stop)
        return {"name": result.name, "metrics": result.metrics, "complete": result.complete}
    return fn


def features_task(lm: LanguageModel, sae, dataset: DatasetSpec | str | dict, store: Store, sae_name: str,
                  config: FeatureConfig):
    """A job function computing the feature cards of SAE `sae_name` over `dataset`."""
    def fn(report: Report, should_stop: ShouldStop) -> dict:
        return compute_features(lm, sae, dataset, store, sae_name, config,
                                progress=_token_progress(report, "Read"), should_stop=should_stop)
    return fn


@dataclass
class DemoBudget:
    """The one-click demo's sizes: under 2 minutes on 2 idle CPU cores, with the demo's acceptance SAE
    (16 x d_model features, k = 32, trained for 2M tokens; docs/experiments.md measures what it finds)."""

    layer: str = "resid_post.2"
    capture_tokens: int = 600_000
    train_tokens: int = 2_000_000    # about four passes over the captured tokens that are not held out
    width: int = 3072                # 16 x the demo's d_model
    k: int = 32
    batch_size: int = 4096
    feature_tokens: int = 200_000
    # share of the total time each stage takes (progress bar weights; measured on 2 cores, training
    # including its held-out evaluation)
    weights: tuple[float, float, float] = (0.23, 0.62, 0.15)


def run_demo_pipeline(store: Store, progress: Report | None = None, should_stop: ShouldStop | None = None,
                      budget: DemoBudget | None = None, model: str = "demo", lm: LanguageModel | None = None) -> dict:
    """Capture -> train a top-k SAE -> feature cards, on the demo model and corpus. Returns names and metrics.

    Stops between (and inside) stages when `should_stop()` turns True; what was finished stays in the store.
    """
    budget = budget or DemoBudget()
    report = progress or (lambda *args, **kwargs: None)
    stop = should_stop or (lambda: False)
    lm = lm or load_model(model)
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    a, b, _ = budget.weights
    run = default_run_name("demo")
    report(0.0, "Capturing activations of the demo corpus…")
    # Texts are sorted by length in groups of batch_size * sort_window; a small window keeps the
    # stories generated (and not used) beyond the budget few.
    config = CaptureConfig(layers=[budget.layer], max_tokens=budget.capture_tokens, sort_window=8)
    captured = capture_task(lm, DatasetSpec("demo"), config, store, run)(_scaled(report, 0.0, a), stop)
    seconds["capture"] = time.perf_counter() - start
    result = {"run": run, "tokens": captured["tokens"], "seconds": seconds}
    if stop():
        return result
    steps = -(-budget.train_tokens // budget.batch_size)
    train = TrainConfig(arch="topk", width=budget.width, k=budget.k, tokens=budget.train_tokens,
                        batch_size=budget.batch_size, log_every=max(1, steps // 50))  # ~50 points on the curves
    trained = train_task(store, run, budget.layer, train, name=f"{run}-topk", lm=lm)(_scaled(report, a, a + b), stop)
    seconds["train"] = time.perf_counter() - start - seconds["capture"]
    result.update(sae=trained["name"], metrics=trained["metrics"])
    if stop() or not trained["complete"]:
        return result
    # Other stories than the capture's (seed 1); the train split, because the demo generator makes
    # validation stories by discarding 19 of 20 train ones.
    sae = load_sae(store, trained["name"], device=str(lm.device))
    features = features_task(lm, sae, DatasetSpec("demo", seed=1), store, trained["name"],
                             FeatureConfig(max_tokens=budget.feature_tokens, sort_window=8))
    result["features"] = features(_scaled(report, a + b, 1.0), stop)
    seconds["features"] = time.perf_counter() - start - seconds["capture"] - seconds["train"]
    seconds["total"] = time.perf_counter() - start
    report(1.0, f"Done in {seconds['total']:.0f} s: open the Features page to explore '{trained['name']}'.")
    return result


def default_run_name(prefix: str) -> str:
    return f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
