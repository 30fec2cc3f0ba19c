"""Steered generation against plain generation: the cost of the steering and feature-recording hooks.

    python benchmarks/steering.py [--store S --sae NAME] [--tokens 40] [--repeats 7]

Uses the demo model with a random TopK SAE (the demo pipeline's architecture and width) unless --store/--sae
name a trained one. Times, per generated token (EOS is suppressed until --tokens tokens): plain `generate`,
and the steered generation `steer` runs (generate with SAESteering, then feature_trace for the per-token
activations) for add and clamp; and the price of `steer` running baseline, steered and prompt baseline as
three calls instead of one batch of 3.
Target: steered / plain <= 1.15. The last stdout line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from microw_core.model import LanguageModel, generate, load_model  # noqa: E402
from microw_core.sae import SAEConfig, build_sae, load_sae  # noqa: E402
from microw_core.steering import (FeatureEdit, SAESteering, SteeringScales, concept_prompt,  # noqa: E402
                                  feature_trace)
from microw_core.store import Store  # noqa: E402

PROMPT = "One day Tom"


def per_token(lm: LanguageModel, sae, hook: SAESteering | None, tokens: int) -> float:
    """Seconds per generated token of one greedy generation (steered: plus the activation trace)."""
    start = time.perf_counter()
    result = generate(lm, PROMPT, max_new_tokens=tokens, hooks=(hook,) if hook else ())
    if hook is not None:
        feature_trace(lm, sae, PROMPT, result.token_ids, [7], hook)
    return (time.perf_counter() - start) / max(len(result.token_ids), 1)


def three_ways(lm: LanguageModel, hook: SAESteering, batch_hook: SAESteering, tokens: int) -> tuple[float, float]:
    """Seconds per generated token: baseline, steered and prompt baseline as three calls (what `steer` does),
    and as one left-padded batch of 3 with per-row strengths (the faster, numerically different alternative)."""
    prompts = [PROMPT, PROMPT, concept_prompt(PROMPT, ["ocean"])]
    start, n = time.perf_counter(), 0
    for prompt, hooks in zip(prompts, [(), (hook,), ()]):
        n += len(generate(lm, prompt, max_new_tokens=tokens, hooks=hooks).token_ids)
    separate = (time.perf_counter() - start) / n
    batch = lm.tokenize(prompts, padding_side="left")
    start = time.perf_counter()
    with lm.hooks(batch_hook), torch.no_grad():
        output = lm.model.generate(**batch, max_new_tokens=tokens, do_sample=False, temperature=None, top_k=None,
                                   top_p=None, pad_token_id=lm.tokenizer.pad_token_id)
    batched = (time.perf_counter() - start) / (3 * (output.shape[1] - batch["input_ids"].shape[1]))
    return separate, batched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None)
    parser.add_argument("--sae", default=None)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    lm = load_model("demo", device="cpu")
    if args.sae:
        sae = load_sae(Store(args.store), args.sae)
    else:
        torch.manual_seed(0)
        sae = build_sae(SAEConfig(arch="topk", d_in=lm.d_model, width=2048, k=32, layer="resid_post.2"))
    sae = sae.eval().requires_grad_(False)
    # The demo model may end a story after a dozen tokens; per-token figures would then mostly time the fixed
    # cost of the activation trace. Suppress EOS until --tokens tokens so every variant times the same length.
    lm.model.generation_config.min_new_tokens = args.tokens
    scales = SteeringScales(torch.ones(sae.cfg.width), median_norm=1.0, source="benchmark")
    edits = {"add": [FeatureEdit(7, 4.0, "add")], "clamp": [FeatureEdit(7, 4.0, "clamp")]}
    generate(lm, PROMPT, max_new_tokens=4)  # warm-up

    # Interleave the measurements so background load hits all of them alike.
    plain, add, clamp = [], [], []
    for _ in range(args.repeats):
        plain.append(per_token(lm, sae, None, args.tokens))
        add.append(per_token(lm, sae, SAESteering(sae, edits["add"], scales), args.tokens))
        clamp.append(per_token(lm, sae, SAESteering(sae, edits["clamp"], scales), args.tokens))
    # The fastest of the repeats: background load only ever adds time (timeit's rule).
    plain_s, add_s, clamp_s = (min(x) for x in (plain, add, clamp))
    rows = torch.tensor([[0.0], [4.0], [0.0]])
    ways = [three_ways(lm, SAESteering(sae, edits["add"], scales),
                       SAESteering(sae, edits["add"], scales, row_strengths=rows), args.tokens) for _ in range(3)]
    separate, batched = (min(w[i] for w in ways) for i in (0, 1))
    result = {
        "model": lm.name, "sae": args.sae or "random topk", "width": sae.cfg.width, "tokens": args.tokens,
        "plain_ms_per_token": 1000 * plain_s, "add_ms_per_token": 1000 * add_s, "clamp_ms_per_token": 1000 * clamp_s,
        "ratio_add": add_s / plain_s, "ratio_clamp": clamp_s / plain_s,
        "separate_ms_per_token": 1000 * separate, "batched_ms_per_token_row": 1000 * batched,
        "separate_over_batched": separate / batched,
    }
    result["ratio"] = max(result["ratio_add"], result["ratio_clamp"])
    result["passed"] = result["ratio"] <= 1.15
    print(f"plain {result['plain_ms_per_token']:.2f} ms/token; steered add {result['add_ms_per_token']:.2f} "
          f"(x{result['ratio_add']:.3f}), clamp {result['clamp_ms_per_token']:.2f} (x{result['ratio_clamp']:.3f})")
    print(f"steer(): 3 separate generations {1000 * separate:.2f} ms/token vs one batch of 3 "
          f"{1000 * batched:.2f} ms/token-row (separate costs x{result['separate_over_batched']:.2f})")
    print(f"ratio {result['ratio']:.3f} (target <= 1.15)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
