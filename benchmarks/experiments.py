"""The demo's measured results for the user guide: writes the results section of docs/experiments.md.

    python benchmarks/experiments.py [--store DIR] [--out FILE] [--smoke] [--render RESULTS.json]

On the demo model: the app's one-click pipeline (capture 600k tokens of resid_post.2; a TopK SAE with k = 32 and
16 x d_model = 3,072 features trained on 2M tokens; its feature cards), then TopK k = 16 and 64 and BatchTopK
k = 32 in one more pass; concept recovery against the planted labels (single neurons and a whole-layer probe as
references) and steering towards every topic. Every figure on the
page comes from the microw_core calls below. The text between `<!-- results:start -->` and
`<!-- results:end -->` in docs/experiments.md is replaced (--out writes the page elsewhere); the last stdout
line is a JSON object with every figure. About 8 minutes on two idle CPU cores; --smoke runs tiny budgets in about
a minute (for the test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from microw_core import load_model  # noqa: E402
from microw_core.concepts import evaluate_concepts  # noqa: E402
from microw_core.pipeline import DemoBudget, run_demo_pipeline  # noqa: E402
from microw_core.sae import TrainConfig, load_sae, train_saes  # noqa: E402
from microw_core.steering import DEFAULT_STRENGTHS, SteeringEvalConfig, evaluate_steering  # noqa: E402
from microw_core.store import Store  # noqa: E402

PAGE = Path(__file__).resolve().parent.parent / "docs" / "experiments.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
LAYER = "resid_post.2"


@dataclass
class Budget:
    demo: DemoBudget = field(default_factory=DemoBudget)  # the app's one-click pipeline: capture, SAE, cards
    sweep: tuple[tuple[str, int], ...] = (("topk", 16), ("topk", 64), ("batchtopk", 32))  # one more pass
    concept_stories: int = 2000
    steering_samples: int = 8
    steering_strengths: tuple[float, ...] = DEFAULT_STRENGTHS
    steering_topics: tuple[str, ...] | None = None  # None: all 16
    steering_tokens: int = 40
    steering_stories: int = 20       # validation stories per topic for finding its feature


SMOKE = Budget(demo=DemoBudget(capture_tokens=10_000, width=256, k=16, train_tokens=40_000, batch_size=1024,
                               feature_tokens=5_000),
               sweep=(("topk", 8),), concept_stories=20, steering_samples=1, steering_strengths=(0.0, 1.0),
               steering_topics=("ocean",), steering_tokens=10, steering_stories=3)

METRICS = ("explained_variance", "l0", "dead_fraction", "dense_fraction", "ce_loss_recovered", "kl", "shrinkage",
           "heldout_tokens", "seconds", "tokens_per_s")


def measure(store: Store, budget: Budget, log) -> dict:
    lm = load_model("demo")
    demo = budget.demo
    pipeline = run_demo_pipeline(store, budget=demo, lm=lm)
    seconds = {"pipeline": pipeline["seconds"]["total"]}
    run, main_name = pipeline["run"], pipeline["sae"]
    log(f"demo pipeline in {seconds['pipeline']:.0f} s: {pipeline['seconds']}")
    main_sae = load_sae(store, main_name, device=str(lm.device))

    configs = [TrainConfig(arch=arch, width=demo.width, k=k, tokens=demo.train_tokens, batch_size=demo.batch_size)
               for arch, k in budget.sweep]
    start = time.perf_counter()
    others = train_saes(store, run, demo.layer, configs, names=[f"{run}-{a}-k{k}" for a, k in budget.sweep], lm=lm)
    seconds["sweep"] = time.perf_counter() - start
    log(f"trained {len(others)} more SAEs in one pass in {seconds['sweep']:.0f} s")
    saes = [{"name": main_name, "arch": "topk", "k": demo.k, "width": demo.width,
             **{key: pipeline["metrics"].get(key) for key in METRICS}}]
    saes += [{"name": r.name, "arch": r.sae.cfg.arch, "k": r.sae.cfg.k, "width": r.sae.cfg.width,
              **{key: r.metrics.get(key) for key in METRICS}} for r in others]

    start = time.perf_counter()
    concepts = evaluate_concepts(lm, main_sae, store, main_name, n_stories=budget.concept_stories)
    seconds["concepts"] = time.perf_counter() - start
    log(f"concept evaluation in {seconds['concepts']:.0f} s")

    start = time.perf_counter()
    config = SteeringEvalConfig(samples=budget.steering_samples, max_new_tokens=budget.steering_tokens,
                                stories_per_topic=budget.steering_stories)
    steering = evaluate_steering(lm, main_sae, store, main_name, strengths=budget.steering_strengths,
                                 config=config, topics=budget.steering_topics)
    seconds["steering"] = time.perf_counter() - start
    log(f"steering evaluation in {seconds['steering']:.0f} s")

    return {
        "budget": asdict(budget), "pipeline": pipeline, "saes": saes, "main_sae": main_name,
        "concepts": concepts, "steering": steering, "seconds": seconds,
        "machine": machine(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }


def machine() -> str:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.system()}"


# ----- the page ----------------------------------------------------------------------------------------


def pct(value) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def results_markdown(r: dict) -> str:
    b, s, c, st = r["budget"]["demo"], r["seconds"], r["concepts"], r["steering"]
    p = r["pipeline"]
    stages, main = p["seconds"], r["saes"][0]
    total = sum(s.values())
    lines = [
        f"Measured on {r['date']} on {r['machine']}, by `python benchmarks/experiments.py` "
        f"({total / 60:.1f} minutes in all).",
        "",
        f"**The demo pipeline** (the app's one-click button, `run_demo_pipeline`): {stages['total']:.0f} s in all.",
        "",
        "| Step | Budget | Time | Speed |",
        "|---|---|---|---|",
        f"| Capture `{b['layer']}` | {p['tokens']:,} tokens | {stages['capture']:.0f} s | "
        f"{p['tokens'] / max(stages['capture'], 1e-9):,.0f} tokens/s |",
        f"| Train `{r['main_sae']}` (TopK, {b['width']:,} features, k = {b['k']}) | {b['train_tokens']:,} tokens | "
        f"{main['seconds']:.0f} s training, {stages['train']:.0f} s with evaluation | "
        f"{main['tokens_per_s']:,.0f} tokens/s |",
        f"| Feature cards | {p['features']['tokens']:,} tokens | {stages['features']:.0f} s | "
        f"{p['features']['tokens_per_s']:,.0f} tokens/s; {p['features']['alive']:,} of "
        f"{p['features']['features']:,} features fired |",
        "",
        "**Then:**",
        "",
        "| Step | Budget | Time |",
        "|---|---|---|",
        f"| Train {len(r['saes']) - 1} more SAEs in one pass | {b['train_tokens']:,} tokens each | {s['sweep']:.0f} s |",
        f"| Concept recovery | {c['stories']:,} test stories ({c['tokens']:,} tokens) | {s['concepts']:.0f} s |",
        f"| Steering | {st['topics']} topic(s) x {len(st['strengths'])} strengths | {s['steering']:.0f} s |",
        "",
        "**SAEs** (held-out tokens; CE loss recovered and KL with the SAE spliced into the model):",
        "",
        "| SAE | Explained variance | L0 | Dead | Dense | CE loss recovered | KL | Shrinkage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sae in r["saes"]:
        lines.append(f"| {sae['arch']} k = {sae['k']}, {sae['width']:,} features | {num(sae['explained_variance'])} | "
                     f"{num(sae['l0'], 1)} | {pct(sae['dead_fraction'])} | {pct(sae['dense_fraction'])} | "
                     f"{num(sae['ce_loss_recovered'])} | {num(sae['kl'])} | {num(sae['shrinkage'])} |")
    lines += [
        "",
        f"**Concept recovery** (`{r['main_sae']}`, layer `{c['layer']}`): mean best F1 **{c['mean_best_f1']:.3f}** "
        f"for SAE features against {c['neuron_mean_best_f1']:.3f} for single neurons and "
        f"{c['probe_mean_best_f1']:.3f} for a logistic probe on the whole layer; **{c['recovered']} of "
        f"{c['concepts']}** concepts recovered at F1 ≥ {c['recovered_at']} (neurons: {c['neuron_recovered']}). "
        f"The best feature's automatic label names the concept for {c['labels_name_concept']} of {c['concepts']} "
        "concepts.",
        "",
        "| Concept | Kind | Best feature | F1 | Precision | Recall | Best neuron F1 | Probe F1 | Automatic label |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in c["per_concept"]:
        label = p["label"].replace("|", "\\|") or "(none)"
        lines.append(f"| {p['concept']} | {p['kind']} | {p['feature']} | {p['f1']:.2f} | {p['precision']:.2f} | "
                     f"{p['recall']:.2f} | {p['neuron_f1']:.2f} | {p['probe_f1']:.2f} | {label} |")
    lines += [
        "",
        f"**Steering** (`{r['main_sae']}`: each topic's {st['config']['features_per_topic']} best features, "
        f"{st['config']['method']}, strengths in units of each feature's maximum activation, "
        f"{st['config']['samples']} samples x 6 neutral prompts per strength): **{st['succeeded']} of "
        f"{st['topics']}** topics steered successfully; mean on-topic rate {pct(st['mean_success'])} at the best "
        f"strength against {pct(st['mean_baseline'])} unsteered and {pct(st['mean_prompt_success'])} with the "
        f"prompt-only baseline; mean perplexity ratio at the best strength {st['mean_ppl_ratio']:.2f}; the "
        f"features' activation rises monotonically with strength for {st['monotonic']} of {st['topics']} topics.",
        "",
        "| Topic | Feature | Unsteered | Best strength | Steered | Perplexity ratio | Prompt only | Success |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for topic, t in st["per_topic"].items():
        lines.append(f"| {topic} | {t['feature']} | {pct(t['baseline'])} | {t['best_strength']:g} | "
                     f"{pct(t['best_success'])} | {t['best_ppl_ratio']:.2f} | {pct(t['prompt_success'])} | "
                     f"{'yes' if t['succeeded'] else 'no'} |")
    return "\n".join(lines)


def write_page(results: dict, out: Path) -> None:
    page = PAGE.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(page):
        raise SystemExit(f"{PAGE} has no {START} ... {END} section to fill.")
    out.write_text(pattern.sub(lambda _: f"{START}\n{results_markdown(results)}\n{END}", page), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="store folder to keep the runs and SAEs (default: temporary)")
    parser.add_argument("--out", default=str(PAGE), help="page to write (default: docs/experiments.md)")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets: checks that the script runs")
    parser.add_argument("--render", metavar="JSON", help="write the page from a saved last line, measuring nothing")
    args = parser.parse_args()
    if args.render:
        results = json.loads(Path(args.render).read_text(encoding="utf-8").strip().splitlines()[-1])
        write_page(results, Path(args.out))
        return
    budget = SMOKE if args.smoke else Budget()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        results = measure(Store(args.store or scratch), budget, log)
    write_page(results, Path(args.out))
    log(f"wrote {args.out}")
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
