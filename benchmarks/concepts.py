"""Planted-concept recovery on the demo: best single-feature F1 per concept vs raw neurons.

    python benchmarks/concepts.py [--store S --sae NAME] [--stories 2000]

Without --sae, builds the demo SAE the one-click pipeline builds (capture -> TopK SAE -> feature
cards, `pipeline.run_demo_pipeline`) in a temporary store first. Then `evaluate_concepts` on
held-out (test split) stories. Acceptance: mean best F1 >= 0.75, at least 0.15 above the
raw-neuron baseline, and >= 60% of concepts recovered (F1 >= 0.8).
The last stdout line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from microw_core.concepts import evaluate_concepts
from microw_core.model import load_model
from microw_core.pipeline import run_demo_pipeline
from microw_core.sae import load_sae
from microw_core.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None)
    parser.add_argument("--sae", default=None, help="an SAE of the demo model in --store (default: build one)")
    parser.add_argument("--stories", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model("demo", device="cpu", dtype="float32")
    start = time.perf_counter()
    if args.sae:
        store, name = Store(args.store), args.sae
    else:
        store = Store(args.store or tempfile.mkdtemp(prefix="microw-bench-concepts-"))
        name = run_demo_pipeline(store, lm=lm)["sae"]
    built = time.perf_counter() - start
    sae = load_sae(store, name)
    result = evaluate_concepts(lm, sae, store, name, n_stories=args.stories)
    for p in result["per_concept"]:
        print(f"{p['concept']:<14} {p['kind']:<10} F1 {p['f1']:.3f}  feature {p['feature']:>5}  "
              f"label '{p['label']}'{' (names it)' if p['label_names_concept'] else ''}   neuron F1 {p['neuron_f1']:.3f}")
    n = result["concepts"]
    checks = {
        "mean_best_f1>=0.75": result["mean_best_f1"] >= 0.75,
        "margin_over_neurons>=0.15": result["mean_best_f1"] - result["neuron_mean_best_f1"] >= 0.15,
        "recovered>=60%": result["recovered"] >= 0.6 * n,
    }
    print(f"mean best F1 {result['mean_best_f1']:.3f} (neurons {result['neuron_mean_best_f1']:.3f}); "
          f"{result['recovered']}/{n} recovered; {result['labels_name_concept']}/{n} labels name their concept; "
          f"{'PASS' if all(checks.values()) else 'FAIL'} {checks}")
    print(json.dumps({
        **{k: v for k, v in result.items() if k != "per_concept"}, "checks": checks, "passed": all(checks.values()),
        "sae": name, "store": str(store.root), "build_seconds": round(built, 1),
        "per_concept": {p["concept"]: {"f1": round(p["f1"], 3), "neuron_f1": round(p["neuron_f1"], 3),
                                       "feature": p["feature"], "label": p["label"]} for p in result["per_concept"]},
    }))


if __name__ == "__main__":
    main()
