"""Capture speed relative to a plain forward pass, and capture memory over long runs.

    python benchmarks/capture.py [--quick]

1. Throughput: for the demo model and a GPT-2-small-sized random-init model, the time of plain
   forward passes over the batches capture makes (same texts, same length-sorted padded batches,
   built with capture's own batching) divided by the time of `capture()` end to end (reading the
   dataset, tokenizing, padding, copying rows, writing checksummed shards), in wall-clock and in
   CPU time. Rounds interleave the baseline and each capture variant, after a warm-up, so load
   from other jobs hits both alike. Variants: one middle layer (early stop off: every block runs),
   several layers at once (early stop off), and resid_post.0 with early stop (the rest of the
   model is skipped). Capture never computes the KV cache or the logits it does not store, so
   each variant is also compared with a forward that skips them too: that ratio is the cost of
   capture's own work (hooks, copies, tokenizing, writing shards) alone.
2. Memory: peak RSS (ru_maxrss from os.wait4 of a fresh child process) of capturing 2M vs 200k
   demo-corpus tokens into a temporary store. Flat memory means a ratio near 1.

The last stdout line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from microw_core.capture import CaptureConfig, _hooks_only_options, _pad, _sorted_batches, capture
from microw_core.datasets import iter_windows
from microw_core.demo.corpus import generate_stories
from microw_core.model import LanguageModel, load_model
from microw_core.store import Store


def log(msg: str) -> None:
    print(msg, flush=True)


# ----- models ----------------------------------------------------------------------------------------


def gpt2_small(tokenizer) -> LanguageModel:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=len(tokenizer),
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    return LanguageModel(model=GPT2LMHeadModel(config), tokenizer=tokenizer, name="gpt2-small-random")


# ----- throughput --------------------------------------------------------------------------------------


def batches_of(lm: LanguageModel, texts: list[str], config: CaptureConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The padded batches capture runs for `texts`, built with capture's own batching."""
    windows = iter_windows(texts, lm.tokenizer, max_length=config.max_length, pack=config.pack)
    out = []
    for _, batch in _sorted_batches(windows, config.batch_size, config.sort_window, (0, 0)):
        ids, mask, _, _ = _pad(batch, lm.tokenizer.pad_token_id)
        out.append((ids.to(lm.device), mask.to(lm.device)))
    return out


def time_forward(lm: LanguageModel, batches, **options) -> tuple[float, float]:
    """(wall, CPU) seconds of plain forward passes; CPU time counts every thread of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for ids, mask in batches:
            lm.model(input_ids=ids, attention_mask=mask, **options)
    return time.perf_counter() - wall, time.process_time() - cpu


def time_capture(lm: LanguageModel, dataset: str, config: CaptureConfig, store: Store,
                 run: str) -> tuple[float, float, dict]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = capture(lm, dataset, config, store, run=run)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    store.delete_run(run)
    return wall, cpu, result


def throughput(lm: LanguageModel, texts: list[str], variants: dict[str, CaptureConfig], rounds: int,
               work: Path) -> dict:
    """Capture / forward speed ratios per variant, over the same batches.

    wall: median over rounds of (forward time / time of the capture run right after it), i.e.
    capture tokens/s divided by forward tokens/s. cpu: the same with the CPU time of this process
    (all threads), which time taken by other jobs on the machine does not inflate; it counts the
    writer thread's work in full even where that overlaps the model on an idle core.
    wall_no_logits: against a forward that skips what capture skips (KV cache, all but the last
    position's logits): the cost of capture's own work alone.
    """
    dataset = work / f"{lm.name.replace('/', '_')}-texts.jsonl"
    dataset.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    store = Store(work / "store")
    batches = batches_of(lm, texts, next(iter(variants.values())))
    tokens = int(sum(mask.sum() for _, mask in batches))
    # Warm-up: first calls allocate, pick kernels and fill caches.
    time_forward(lm, batches[:2])
    time_capture(lm, str(dataset), CaptureConfig(layers=["resid_post.0"], max_tokens=500), store, "warmup")
    forward_wall: list[float] = []
    pairs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}  # ratios
    for r in range(rounds):
        for name, config in variants.items():
            base_wall, base_cpu = time_forward(lm, batches)
            # the same options capture passes: no KV cache, the last position's logits only
            trunk_wall, _ = time_forward(lm, batches, **_hooks_only_options(lm.model, logits_read=False))
            wall, cpu, result = time_capture(lm, str(dataset), config, store, f"{name}-{r}")
            forward_wall.append(base_wall)
            pairs[name].append((base_wall / wall, base_cpu / cpu, trunk_wall / wall))
            log(f"  round {r + 1}: {name:<8} forward {base_wall:6.2f}s ({tokens / base_wall:6.0f} tok/s, cpu "
                f"{base_cpu:5.2f}s; no logits {trunk_wall:5.2f}s)  capture {wall:6.2f}s (cpu {cpu:5.2f}s; "
                f"{result['tokens']} tokens x {len(config.layers)} layers)  ratio {base_wall / wall:.3f} "
                f"(cpu {base_cpu / cpu:.3f}; vs no logits {trunk_wall / wall:.3f})")
    ratios = {name: {key: round(statistics.median(run[i] for run in runs), 3)
                     for i, key in enumerate(("wall", "cpu", "wall_no_logits"))}
              for name, runs in pairs.items()}
    for name, r in ratios.items():
        log(f"  {name:<8} capture/forward speed (median of {rounds}): wall {r['wall']:.3f}, CPU time {r['cpu']:.3f}, "
            f"against a forward without logits {r['wall_no_logits']:.3f}")
    return {"ratios": ratios, "tokens_per_pass": tokens, "forward_tokens_per_s": round(tokens / statistics.median(forward_wall)),
            "layers": {name: config.layers for name, config in variants.items()}}


def variants_for(lm: LanguageModel) -> dict[str, CaptureConfig]:
    n = lm.n_layers
    several = sorted({f"resid_post.{i}" for i in range(0, n, max(1, n // 4))} | {f"resid_post.{n - 1}"},
                     key=lambda name: int(name.split(".")[1]))
    several += [f"attn_out.{n // 2}", f"mlp_out.{n // 2}"]
    return {
        "one": CaptureConfig(layers=[f"resid_post.{n // 2}"], early_stop=False),
        "several": CaptureConfig(layers=several, early_stop=False),
        "early": CaptureConfig(layers=["resid_post.0"], early_stop=True),
    }


# ----- memory ------------------------------------------------------------------------------------------


def rss_child(model: str, store: str, tokens: int) -> None:
    """Runs in a fresh process: capture `tokens` demo-corpus tokens; prints a JSON line."""
    import psutil

    lm = load_model(model, device="cpu")
    before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    result = capture(lm, "demo", CaptureConfig(layers=["resid_post.0"], max_tokens=tokens), Store(store), run="rss")
    hwm = next((int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM")), None)
    print(json.dumps({"rss_before_capture": before, "vm_hwm": hwm, "seconds": time.perf_counter() - start,
                      "tokens": result["tokens"], "shards": len(Store(store).read_json("runs/rss/manifest.json")["shards"])}))


def peak_rss(model: str, tokens: int, work: Path) -> dict:
    with tempfile.TemporaryDirectory(dir=work) as store:
        child = subprocess.Popen([sys.executable, __file__, "--rss-child", model, store, str(tokens)],
                                 stdout=subprocess.PIPE, text=True)
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not all children's
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise RuntimeError(f"capture child for {tokens} tokens failed ({child.returncode})")
    info = json.loads(out.strip().splitlines()[-1])
    return {**info, "peak_rss": usage.ru_maxrss * 1024}  # Linux reports KiB


# ----- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens and rounds (a smoke run)")
    parser.add_argument("--rss-child", nargs=3, metavar=("MODEL", "STORE", "TOKENS"), help=argparse.SUPPRESS)
    parser.add_argument("--big-tokens", type=int, default=2_000_000)
    parser.add_argument("--small-tokens", type=int, default=200_000)
    args = parser.parse_args()
    if args.rss_child:
        model, store, tokens = args.rss_child
        rss_child(model, store, int(tokens))
        return

    work = Path(tempfile.mkdtemp(prefix="microw-bench-"))
    try:
        run_all(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_all(args: argparse.Namespace, work: Path) -> None:
    started = time.perf_counter()
    log(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
        f"cuda={torch.cuda.is_available()}, load average {os.getloadavg()[0]:.1f}")
    model = "demo"
    # Memory first, while this process is small: Linux carries a parent's peak RSS into a child's ru_maxrss.
    big, small = (args.big_tokens, args.small_tokens) if not args.quick else (100_000, 10_000)
    log(f"\n[memory] capturing resid_post.0 of the demo model, {small} and {big} tokens, fresh process each")
    memory = {}
    for tokens in (small, big):
        memory[tokens] = peak_rss(model, tokens, work)
        m = memory[tokens]
        log(f"  {m['tokens']:>9} tokens: peak RSS {m['peak_rss'] / 2**20:7.1f} MiB (before capture "
            f"{m['rss_before_capture'] / 2**20:.1f} MiB, own VmHWM {m['vm_hwm'] / 2**20:.1f} MiB), "
            f"{m['seconds']:.1f}s, {m['shards']} shards")
    rss_ratio = memory[big]["peak_rss"] / memory[small]["peak_rss"]
    log(f"  peak RSS ratio {big} / {small} tokens: {rss_ratio:.3f}")

    demo = load_model(model, device="cpu")
    rounds = 1 if args.quick else 4
    stories = [s.text for s in generate_stories(60 if args.quick else 1000, "train", seed=1)]

    log(f"\n[demo] d_model {demo.d_model}, {demo.n_layers} layers")
    results = {"demo": throughput(demo, stories, variants_for(demo), rounds, work)}

    gpt2 = gpt2_small(demo.tokenizer)
    log(f"\n[gpt2-small] random init, 12 layers, d_model 768, demo tokenizer (vocab {len(demo.tokenizer)})")
    results["gpt2_small"] = throughput(gpt2, stories[:64], variants_for(gpt2), 1 if args.quick else 3, work)
    del gpt2

    checks = {"one_layer_wall_ratio_ge_0.9": all(r["ratios"]["one"]["wall"] >= 0.9 for r in results.values()),
              "one_layer_cpu_ratio_ge_0.9": all(r["ratios"]["one"]["cpu"] >= 0.9 for r in results.values()),
              "early_stop_ratio_gt_1": all(r["ratios"]["early"]["wall"] > 1 for r in results.values()),
              "rss_ratio_le_1.2": rss_ratio <= 1.2}
    load = os.getloadavg()[0]
    log(f"\nchecks: {checks}; total {time.perf_counter() - started:.0f}s; load average now {load:.1f}")
    print(json.dumps({
        "model": "demo", "torch_threads": torch.get_num_threads(), "load_average": round(load, 1),
        "demo": results["demo"]["ratios"], "gpt2_small": results["gpt2_small"]["ratios"],
        "demo_forward_tokens_per_s": results["demo"]["forward_tokens_per_s"],
        "gpt2_small_forward_tokens_per_s": results["gpt2_small"]["forward_tokens_per_s"],
        "tokens_per_pass": {k: r["tokens_per_pass"] for k, r in results.items()},
        "layers": {k: r["layers"] for k, r in results.items()},
        "peak_rss_bytes": {str(k): v["peak_rss"] for k, v in memory.items()},
        "vm_hwm_bytes": {str(k): v["vm_hwm"] for k, v in memory.items()},
        "rss_ratio": round(rss_ratio, 3), "checks": checks,
    }))


if __name__ == "__main__":
    main()
