"""Acceptance figures of the shipped demo model (microw_core/demo/model).

    python benchmarks/demo_model.py [--model DIR] [--test-stories 500] [--samples 20] [--threads 1]

1. Held-out perplexity on test-split stories, against an add-one unigram model fitted on 5,000 train stories and
   against the same architecture at random init (targets: <= 0.2 x unigram, <= 0.01 x random init).
2. Topic coherence: for every topic, the share of sampled continuations (temperature 1.0, 60 new tokens) of
   topic_prompt(topic) that classify_topic() assigns to that topic (target: >= 0.8 for every topic).
3. Vocabulary rate: the share of generated words that are corpus vocabulary (target: >= 0.95).

The last stdout line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from microw_core.demo.evaluate import acceptance
from microw_core.demo.train import DEFAULT_OUT

TARGETS = {"ppl_ratio_unigram": 0.2, "ppl_ratio_random": 0.01, "min_topic_coherence": 0.8, "vocab_rate": 0.95}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_OUT))
    p.add_argument("--test-stories", type=int, default=500)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)  # 2 threads crawl when the cores are shared
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    figures, samples = acceptance(model, tokenizer, test_stories=args.test_stories, samples_per_topic=args.samples)
    figures["seconds"] = round(time.time() - start, 1)

    print(f"held-out perplexity ({args.test_stories} test stories): {figures['ppl']:.3f}")
    print(f"  unigram {figures['unigram_ppl']:.2f} -> ratio {figures['ppl_ratio_unigram']:.4f} (target <= 0.2)")
    print(f"  random init {figures['random_ppl']:.1f} -> ratio {figures['ppl_ratio_random']:.5f} (target <= 0.01)")
    print(f"topic coherence ({args.samples} samples each, target >= 0.8):")
    for topic, share in figures["topic_coherence"].items():
        print(f"  {topic:14s} {share:.2f}   e.g. {samples[topic][0]!r}")
    print(f"vocabulary rate: {figures['vocab_rate']:.4f} (target >= 0.95)")
    passed = {k: (figures[k] <= v if k.startswith("ppl") else figures[k] >= v) for k, v in TARGETS.items()}
    figures["passed"] = all(passed.values())
    print("all targets met" if figures["passed"] else f"targets missed: {[k for k, ok in passed.items() if not ok]}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
