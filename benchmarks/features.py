"""Feature-pass speed relative to a bare forward pass + SAE encode over the same data.

    python benchmarks/features.py [--tokens 50000] [--store S --sae NAME] [--width 3072] [--rounds 3]

Baseline: `iter_feature_batches` consumed without doing anything: reading the dataset, tokenizing,
length-sorted padded batches, the forward pass up to the SAE's layer and the SAE encode, exactly
as the feature pass runs them. Feature pass: `compute_features` over the same data; "pass" is its
streamed pass (the acceptance figure, >= 0.7 x baseline), "end to end" adds logit effects,
neighbours, labels and writing the files. Rounds interleave baseline and pass after a warm-up,
so load from other jobs hits both alike; medians are reported. The CPU-time ratio (process
time, this process only) is steadier than wall clock on a machine shared with other jobs.

Model: the demo model. SAE: a trained one from a store (--store/--sae), else a random TopK SAE (k=32) on the middle layer.
The last stdout line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from microw_core.demo.corpus import generate_stories  # noqa: E402
from microw_core.features import FeatureConfig, compute_features, iter_feature_batches  # noqa: E402
from microw_core.model import load_model  # noqa: E402
from microw_core.sae import SAEConfig, build_sae, load_sae  # noqa: E402
from microw_core.store import Store  # noqa: E402


def log(msg: str) -> None:
    print(msg, flush=True)


def baseline(lm, sae, dataset: str, config: FeatureConfig) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, tokens) of forward + encode alone."""
    start, cpu, tokens = time.perf_counter(), time.process_time(), 0
    for batch in iter_feature_batches(lm, sae, dataset, config):
        tokens += len(batch.token_ids)
    return time.perf_counter() - start, time.process_time() - cpu, tokens


def feature_pass(lm, sae, dataset: str, config: FeatureConfig, store: Store, name: str) -> tuple[dict, float, float]:
    """(result, CPU seconds of the streamed pass, wall seconds end to end) of compute_features."""
    start, cpu = time.perf_counter(), time.process_time()
    last = [cpu]
    result = compute_features(lm, sae, dataset, store, name, config,
                              progress=lambda p: last.__setitem__(0, time.process_time()))
    return result, last[0] - cpu, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", default=None)
    parser.add_argument("--sae", default=None, help="a trained SAE in --store (default: random TopK)")
    parser.add_argument("--width", type=int, default=None, help="random SAE width (default 16 x d_model)")
    parser.add_argument("--layer", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="microw-bench-features-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:

    if args.sae:
        sae = load_sae(Store(args.store), args.sae)
        lm = load_model(sae.cfg.model or "demo", device=args.device, dtype="float32")
        model_note = f"{sae.cfg.model} with trained SAE '{args.sae}'"
    else:
        name, model_note = "demo", "demo model"
        lm = load_model(name, device=args.device, dtype="float32")
        torch.manual_seed(0)
        sae = build_sae(SAEConfig(arch="topk", d_in=lm.d_model, width=args.width or 16 * lm.d_model, k=32,
                                  layer=args.layer or f"resid_post.{lm.n_layers // 2}", model=name))
    sae = sae.eval().to(lm.device)
    log(f"model: {model_note}; SAE {sae.cfg.arch} width {sae.cfg.width} on {sae.cfg.layer}")

    texts, n = [], 0
    for story in generate_stories(10 * args.tokens // 50 + 100, "train", seed=5):
        texts.append(story.text)
        n += len(story.text) // 4
        if n > 1.3 * args.tokens:
            break
    dataset = work / "texts.jsonl"
    dataset.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    config = FeatureConfig(max_tokens=args.tokens)
    store = Store(work / "store")

    baseline(lm, sae, str(dataset), FeatureConfig(max_tokens=2000))  # warm-up
    compute_features(lm, sae, str(dataset), store, "warmup", FeatureConfig(max_tokens=2000))
    base_s, pass_rate, end_rate, cpu_ratios = [], [], [], []
    for r in range(args.rounds):
        seconds, base_cpu, tokens = baseline(lm, sae, str(dataset), config)
        result, pass_cpu, total = feature_pass(lm, sae, str(dataset), config, store, f"round{r}")
        base_s.append(seconds)
        pass_rate.append(result["tokens_per_s"])
        end_rate.append(result["tokens"] / total)
        cpu_ratios.append(base_cpu / pass_cpu)
        log(f"  round {r + 1}: baseline {tokens / seconds:7.0f} tok/s   "
            f"feature pass {result['tokens_per_s']:7.0f} tok/s "
            f"(ratio {result['tokens_per_s'] * seconds / tokens:.3f}, CPU-time ratio {base_cpu / pass_cpu:.3f})   "
            f"end to end {result['tokens'] / total:7.0f} tok/s ({result['alive']}/{result['features']} alive)")
    base_rate = tokens / statistics.median(base_s)
    ratio = statistics.median(pass_rate) / base_rate
    log(f"feature pass / (forward + encode) = {ratio:.3f} wall clock, {statistics.median(cpu_ratios):.3f} CPU time "
        f"(acceptance >= 0.7); end to end {statistics.median(end_rate) / base_rate:.3f}")
    print(json.dumps({
        "ratio": round(ratio, 3), "ratio_cpu_time": round(statistics.median(cpu_ratios), 3),
        "ratio_end_to_end": round(statistics.median(end_rate) / base_rate, 3),
        "baseline_tokens_per_s": round(base_rate), "feature_pass_tokens_per_s": round(statistics.median(pass_rate)),
        "end_to_end_tokens_per_s": round(statistics.median(end_rate)), "tokens": tokens, "rounds": args.rounds,
        "width": sae.cfg.width, "arch": sae.cfg.arch, "layer": sae.cfg.layer, "model": model_note,
        "device": str(lm.device), "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
