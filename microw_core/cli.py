"""The `microw` command line. Every command takes --json and then prints one JSON object last.

Commands call the same `microw_core` functions as the app and the Python API; this module only
parses arguments and prints results.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from .errors import MicrowError

Command = Callable[[argparse.Namespace], dict[str, Any]]


def _model_args(parser: argparse.ArgumentParser, dtype_flag: str = "--dtype") -> None:
    parser.add_argument("--model", default="demo", help="'demo', a local folder, or a hub id (default: demo)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument(dtype_flag, dest="dtype", default="auto", help="model dtype: auto, float32, float16 or bfloat16")
    parser.add_argument("--trust-remote-code", action="store_true", help="run code shipped with a hub model")


def _load(args: argparse.Namespace):
    from .model import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)


def cmd_layers(args: argparse.Namespace) -> dict[str, Any]:
    from .layers import alias_shapes

    lm = _load(args)
    catalogue = lm.catalogue()
    aliases = alias_shapes(lm.model, catalogue, lm.d_model)
    if not args.json:
        for alias, info in aliases.items():
            print(f"{alias:<16} {info['module']:<40} {info['shape']}")
        if args.all:
            for info in catalogue:
                print(f"{info.name:<48} {info.type:<24} {info.parameters:>10} {info.output_shape}")
    return {
        "model": lm.name, "d_model": lm.d_model, "n_layers": lm.n_layers, "aliases": aliases,
        "modules": [
            {"name": i.name, "type": i.type, "parameters": i.parameters,
             "shape": list(i.output_shape) if i.output_shape else None, "aliases": list(i.aliases)}
            for i in catalogue
        ],
    }


def cmd_generate(args: argparse.Namespace) -> dict[str, Any]:
    from .model import generate

    lm = _load(args)
    result = generate(lm, args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                      top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop)
    if not args.json:
        print(args.prompt + result.text)
    return {"prompt": result.prompt, "text": result.text, "token_ids": result.token_ids}


def _progress_bar(total: int | None, unit: str = "tok"):
    """A tqdm bar on a terminal (stderr), nothing otherwise; returns a callback(done) and a closer."""
    if not sys.stderr.isatty():
        return (lambda done: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr)

    def update(done: int) -> None:
        bar.update(done - bar.n)

    return update, bar.close


def cmd_capture(args: argparse.Namespace) -> dict[str, Any]:
    from .capture import CaptureConfig, capture
    from .datasets import DatasetSpec
    from .store import Store

    lm = _load(args)
    spec = DatasetSpec.parse(args.dataset, text_column=args.text_column, split=args.split, max_texts=args.max_texts)
    config = CaptureConfig(layers=args.layers, max_tokens=args.max_tokens, batch_size=args.batch_size,
                           max_length=args.max_length, dtype=args.storage_dtype, keep_special=args.keep_special)
    update, close = _progress_bar(args.max_tokens)
    try:
        result = capture(lm, spec, config, Store(args.store), run=args.run, progress=lambda p: update(p.tokens))
    finally:
        close()
    if not args.json:
        print(f"run {result['run']}: {result['tokens']} tokens x {len(result['layers'])} layers, "
              f"{result['tokens_per_s']:.0f} tokens/s, {result['bytes'] / 1e6:.1f} MB")
    return result


def cmd_runs(args: argparse.Namespace) -> dict[str, Any]:
    from .store import Store

    runs = [{k: r.get(k) for k in ("name", "model", "layers", "tokens", "complete", "bytes", "created", "error")}
            for r in Store(args.store).list_runs()]
    if not args.json:
        for r in runs:
            print(f"{r['name']:<32} {r['model'] or '?':<24} {r['tokens'] or 0:>10} tokens  {', '.join(r['layers'] or [])}")
    return {"runs": runs}


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from .pipeline import run_demo_pipeline
    from .store import Store

    update, close = _progress_bar(100, unit="%")
    try:
        result = run_demo_pipeline(Store(args.store), progress=lambda p, *rest, **kw: update(round(100 * p)))
    finally:
        close()
    if not args.json:
        print(f"run {result['run']} -> SAE {result.get('sae')} (explained variance "
              f"{result.get('metrics', {}).get('explained_variance', float('nan')):.3f}) in {result['seconds'].get('total', 0):.0f} s; "
              "explore it with `microw app`.")
    return result


def cmd_app(args: argparse.Namespace) -> dict[str, Any]:
    import os
    import subprocess
    from pathlib import Path

    import microw_core
    from .errors import InvalidInputError
    from .store import Store

    app = Path(microw_core.__file__).resolve().parent.parent / "app.py"
    if not app.is_file():
        raise InvalidInputError(f"The app (app.py) is not next to the microw_core package ({app} is missing): it ships "
                                "with a source checkout. Clone the repository and run `microw app` from an editable "
                                "install (`pip install -e .`), or `streamlit run app.py` in the checkout.")
    # The store is resolved here, against the caller's folder, because the app runs in the app's folder
    # (where .streamlit/config.toml is read).
    env = {**os.environ, "MICROW_STORE": str(Store(args.store).root)}
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port),
               "--server.address", args.address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--runner.postScriptGC", "false"]
    print(f"microw app on http://{args.address}:{args.port} (store {env['MICROW_STORE']}); Ctrl+C stops it.",
          file=sys.stderr)
    try:
        code = subprocess.call(command, env=env, cwd=app.parent)
    except KeyboardInterrupt:
        code = 0
    return {"returncode": code}


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from .sae.pipeline import train_command
    from .store import Store

    update, close = _progress_bar(None, unit="step")
    try:
        result = train_command(Store(args.store), args.run, args.layer, arch=args.arch, width=args.width, k=args.k,
                               l1=args.l1, tokens=args.tokens, name=args.name, model=args.model,
                               splice=not args.no_splice, device=args.device,
                               progress=lambda record: update(record["step"]))
    finally:
        close()
    if not args.json:
        ce = result.get("ce_loss_recovered")
        print(f"SAE {result['sae']}: explained variance {result['explained_variance']:.3f}, L0 {result['l0']:.1f}, "
              f"dead {result['dead_fraction']:.1%}" + (f", CE loss recovered {ce:.3f}" if ce is not None else "")
              + " (held-out tokens)")
    return result


def cmd_saes(args: argparse.Namespace) -> dict[str, Any]:
    from .sae.pipeline import saes_command
    from .store import Store

    result = saes_command(Store(args.store))
    if not args.json:
        for row in result["saes"]:
            ev, l0 = row.get("explained_variance"), row.get("l0")
            metrics = f"EV {ev:.3f}  L0 {l0:.1f}" if ev is not None and l0 is not None else "(no metrics)"
            print(f"{row['name']:<40} {row.get('arch') or '?':<10} {row.get('width') or 0:>6}  "
                  f"{row.get('layer') or '?':<14} {metrics}")
    return result


def _sae_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None, help="store folder (default $MICROW_STORE or ./microw_store)")
    parser.add_argument("--sae", required=True, help="SAE name in the store")
    parser.add_argument("--model", default=None, help="model to use instead of the one recorded in the SAE's config")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--dtype", default="auto", help="model dtype: auto, float32, float16 or bfloat16")
    parser.add_argument("--trust-remote-code", action="store_true", help="run code shipped with a hub model")


def _load_sae(args: argparse.Namespace):
    """(store, model, SAE): the model is the one the SAE's config records, unless --model is given."""
    from .errors import InvalidInputError
    from .model import load_model
    from .sae import load_sae
    from .store import Store

    store = Store(args.store)
    sae = load_sae(store, args.sae)
    name = args.model or sae.cfg.model
    if not name:
        raise InvalidInputError(f"SAE '{args.sae}' does not record its model; pass --model.")
    lm = load_model(name, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    return store, lm, sae.to(lm.device)


def cmd_features(args: argparse.Namespace) -> dict[str, Any]:
    from .datasets import DatasetSpec
    from .features import FeatureConfig, compute_features

    store, lm, sae = _load_sae(args)
    spec = DatasetSpec.parse(args.dataset, text_column=args.text_column, split=args.split, max_texts=args.max_texts)
    config = FeatureConfig(max_tokens=args.max_tokens or None, top_n=args.top_n, batch_size=args.batch_size,
                           max_length=args.max_length)
    update, close = _progress_bar(config.max_tokens)
    try:
        result = compute_features(lm, sae, spec, store, args.sae, config, progress=lambda p: update(p.tokens))
    finally:
        close()
    if not args.json:
        print(f"{result['features']} features ({result['alive']} alive) over {result['tokens']} tokens, "
              f"{result['tokens_per_s']:.0f} tokens/s; saved under saes/{args.sae}/features/")
    return result


def cmd_feature(args: argparse.Namespace) -> dict[str, Any]:
    from .features import feature_card
    from .store import Store

    card = feature_card(Store(args.store), args.sae, args.id)
    if not args.json:
        print(f"feature {card['id']}: {card['label'] or '(no label)'}  density {card['density']:.4%}  "
              f"max {card['max_activation']:.3f}")
        for ctx in card["top_contexts"]:
            tokens = [f"[[{t}]]" if i == ctx["highlight"] else t for i, t in enumerate(ctx["tokens"])]
            print(f"{ctx['value']:8.3f}  {''.join(tokens)!r}")
        print("promotes:", ", ".join(t for t, _ in card["logits_pos"]))
        print("suppresses:", ", ".join(t for t, _ in card["logits_neg"]))
    return card


def cmd_eval_concepts(args: argparse.Namespace) -> dict[str, Any]:
    from .concepts import evaluate_concepts

    store, lm, sae = _load_sae(args)
    result = evaluate_concepts(lm, sae, store, args.sae, n_stories=args.stories, split=args.split,
                               batch_size=args.batch_size)
    if not args.json:
        for p in result["per_concept"]:
            print(f"{p['concept']:<16} F1 {p['f1']:.3f} (feature {p['feature']:>5}, '{p['label']}')  "
                  f"neuron F1 {p['neuron_f1']:.3f}  probe F1 {p['probe_f1']:.3f}")
        print(f"mean best F1 {result['mean_best_f1']:.3f} (neurons {result['neuron_mean_best_f1']:.3f}, "
              f"whole-layer probe {result['probe_mean_best_f1']:.3f}); "
              f"{result['recovered']}/{result['concepts']} concepts with F1 >= {result['recovered_at']}")
    return result


def _feature_edit(spec: str, method: str, unit: str):
    """`F=STRENGTH` -> FeatureEdit."""
    from .errors import InvalidInputError
    from .steering import FeatureEdit

    feature, sep, strength = spec.partition("=")
    try:
        if not sep:
            raise ValueError
        return FeatureEdit(int(feature), float(strength), method, unit)
    except ValueError:
        raise InvalidInputError(f"--feature '{spec}' is not F=STRENGTH (e.g. --feature 123=4.0).") from None


def cmd_steer(args: argparse.Namespace) -> dict[str, Any]:
    from .steering import SteeringConfig, steer

    edits = [_feature_edit(spec, args.method, args.unit) for spec in args.feature or []]
    store, lm, sae = _load_sae(args)
    config = SteeringConfig(positions=args.positions, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, seed=args.seed)
    result = steer(lm, sae, edits, args.prompt, config, store=store, sae_name=args.sae)
    if not args.json:
        for key in ("baseline", "steered", "prompt_baseline"):
            if result[key] is not None:
                print(f"{key:>15}: {args.prompt}{result[key]}")
    return result


def cmd_eval_steering(args: argparse.Namespace) -> dict[str, Any]:
    from .steering import SteeringEvalConfig, evaluate_steering

    store, lm, sae = _load_sae(args)
    options = ("method", "unit", "features_per_topic", "samples", "stories_per_topic", "max_new_tokens",
               "temperature", "seed", "batch_size")
    config = SteeringEvalConfig(**{k: getattr(args, k) for k in options if getattr(args, k) is not None})
    strengths = {"strengths": args.strengths} if args.strengths else {}
    update, close = _progress_bar(100, unit="%")
    try:
        result = evaluate_steering(lm, sae, store, args.sae, config=config, **strengths,
                                   topics=args.topics, progress=lambda fraction, message: update(int(100 * fraction)))
    finally:
        close()
    if not args.json:
        for topic, t in result["per_topic"].items():
            print(f"{topic:<14} feature {t['feature']:>5}  unsteered {t['baseline']:.0%}  best {t['best_success']:.0%} "
                  f"at {t['best_strength']:g} (ppl x{t['best_ppl_ratio']:.2f})  prompted {t['prompt_success']:.0%}  "
                  f"{'ok' if t['succeeded'] else '--'}")
        print(f"{result['succeeded']}/{result['topics']} topics steered; mean success {result['mean_success']:.0%} "
              f"vs unsteered {result['mean_baseline']:.0%}, perplexity x{result['mean_ppl_ratio']:.2f}")
    return result


def cmd_dataset_export(args: argparse.Namespace) -> dict[str, Any]:
    from .demo.corpus import export_jsonl
    from .errors import DatasetError

    if args.name != "demo":
        raise DatasetError(f"Only the demo corpus has planted labels to export; got '{args.name}'. Use --name demo.")
    path = export_jsonl(args.out, split=args.split, limit=args.limit, seed=args.seed)
    if not args.json:
        print(f"wrote {args.limit} labelled stories to {path}")
    return {"out": str(path), "stories": args.limit, "split": args.split}


def cmd_dataset_concepts(args: argparse.Namespace) -> dict[str, Any]:
    from .demo.corpus import concepts_json
    from .errors import DatasetError

    if args.name != "demo":
        raise DatasetError(f"Only the demo corpus has planted concepts; got '{args.name}'. Use --name demo.")
    concepts = concepts_json()
    if not args.json:
        for c in concepts:
            print(f"{c['name']:<16} {c['kind']:<11} {', '.join(c['lexicon'][:8])}")
    return {"concepts": concepts}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microw", description="Explain and steer language models with SAEs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Command, help: str, parent=sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
        p.set_defaults(func=fn)
        return p

    p = command("layers", cmd_layers, "List the model's layers and the canonical aliases with shapes.")
    _model_args(p)
    p.add_argument("--all", action="store_true", help="also list every module (human output)")

    p = command("generate", cmd_generate, "Generate a continuation of a prompt.")
    _model_args(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")

    p = command("capture", cmd_capture, "Capture activations of layers over a dataset into the store.")
    _model_args(p, dtype_flag="--model-dtype")
    p.add_argument("--dataset", default="demo", help="'demo', a file (.txt .jsonl .json .csv .tsv .parquet), "
                                                     "a save_to_disk folder, or hub:<name>")
    p.add_argument("--layers", nargs="+", required=True, help="aliases or module names, e.g. resid_post.2")
    p.add_argument("--store", default=None, help="store folder (default $MICROW_STORE or ./microw_store)")
    p.add_argument("--run", default=None, help="run name (an interrupted run of this name is resumed)")
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--max-texts", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--dtype", dest="storage_dtype", default="float32", help="storage dtype: float32, float16, bfloat16")
    p.add_argument("--text-column", default="text")
    p.add_argument("--split", default=None)
    p.add_argument("--keep-special", action="store_true", help="also store BOS/EOS positions (flagged)")

    p = command("runs", cmd_runs, "List captured runs in the store.")
    p.add_argument("--store", default=None)

    p = command("demo", cmd_demo, "Run the demo pipeline: capture, train an SAE and compute its feature cards.")
    p.add_argument("--store", default=None, help="store folder (default $MICROW_STORE or ./microw_store)")

    p = command("app", cmd_app, "Start the microw app (Streamlit) in the browser.")
    p.add_argument("--store", default=None, help="store folder (default $MICROW_STORE or ./microw_store)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="127.0.0.1", help="listen address (default: this machine only)")

    p = command("train", cmd_train, "Train an SAE on a captured run, evaluate it on held-out tokens and save it.")
    p.add_argument("--store", default=None, help="store folder (default $MICROW_STORE or ./microw_store)")
    p.add_argument("--run", required=True, help="captured run to train on")
    p.add_argument("--layer", required=True, help="layer of the run, e.g. resid_post.2")
    p.add_argument("--arch", default="topk", choices=["topk", "batchtopk", "relu", "jumprelu"])
    p.add_argument("--width", type=int, default=None, help="number of features (default 16 x the layer width)")
    p.add_argument("--k", type=int, default=None, help="active features per token for topk / batchtopk (default 32)")
    p.add_argument("--l1", type=float, default=None, help="sparsity penalty: L1 coefficient (relu) or L0 (jumprelu)")
    p.add_argument("--tokens", type=int, default=None, help="training tokens (default 2,000,000)")
    p.add_argument("--name", default=None, help="SAE name (default <run>-<layer>-<arch>-<width>[-k<k>])")
    p.add_argument("--model", default=None, help="model to splice the SAE into (default: the run's model)")
    p.add_argument("--no-splice", action="store_true", help="skip measuring CE loss and KL with the model")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")

    p = command("saes", cmd_saes, "List the SAEs in the store with their settings and held-out metrics.")
    p.add_argument("--store", default=None)

    p = command("features", cmd_features, "Compute feature dashboards (one pass of model + SAE over a dataset).")
    _sae_args(p)
    p.add_argument("--dataset", default="demo", help="'demo', a file, a save_to_disk folder, or hub:<name>")
    p.add_argument("--max-tokens", type=int, default=200_000, help="tokens to read (0: the whole dataset)")
    p.add_argument("--max-texts", type=int, default=None)
    p.add_argument("--top-n", type=int, default=20, help="top activating contexts per feature")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--text-column", default="text")
    p.add_argument("--split", default=None)

    p = command("feature", cmd_feature, "Show one feature's card (after `microw features`).")
    p.add_argument("--store", default=None, help="store folder (default $MICROW_STORE or ./microw_store)")
    p.add_argument("--sae", required=True, help="SAE name in the store")
    p.add_argument("--id", type=int, required=True, help="feature id")

    p = command("steer", cmd_steer, "Generate with SAE features steered, next to the unsteered and prompted output.")
    _sae_args(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--feature", action="append", metavar="F=STRENGTH",
                   help="feature id and strength (repeatable; 0 = off)")
    p.add_argument("--method", default="add", choices=["add", "clamp", "ablate"])
    p.add_argument("--unit", default="max_activation", choices=["max_activation", "median_norm", "raw"],
                   help="what a strength of 1 means (default: the feature's max activation)")
    p.add_argument("--positions", default="all", choices=["all", "prompt", "generated"])
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("eval", help="Evaluate SAEs against ground truth.", description="Evaluate SAEs.")
    evals = p.add_subparsers(dest="eval_command", required=True, metavar="WHAT")
    p = command("concepts", cmd_eval_concepts, "Best single-feature F1 for each planted concept of the demo corpus.",
                parent=evals)
    _sae_args(p)
    p.add_argument("--stories", type=int, default=2000, help="demo stories to evaluate on")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=32)

    p = command("steering", cmd_eval_steering, "Steer the demo model towards each topic over a sweep of strengths.",
                parent=evals)
    _sae_args(p)
    # Unset options (None) take SteeringEvalConfig's defaults: one place for them.
    p.add_argument("--strengths", type=float, nargs="+", default=None,
                   help="in units of each feature's maximum activation (default: 0 to 1)")
    p.add_argument("--method", default=None, choices=["add", "clamp"], help="default: clamp")
    p.add_argument("--unit", default=None, choices=["max_activation", "median_norm", "raw"])
    p.add_argument("--topics", nargs="+", default=None, help="demo topics (default: all)")
    p.add_argument("--features-per-topic", type=int, default=None, help="the topic's best features, steered together")
    p.add_argument("--samples", type=int, default=None, help="continuations per neutral prompt and strength")
    p.add_argument("--stories-per-topic", type=int, default=None, help="validation stories for finding topic features")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)

    p = sub.add_parser("dataset", help="The demo corpus: export labelled stories, list planted concepts.",
                       description="The demo corpus: export labelled stories, list planted concepts.")
    datasets = p.add_subparsers(dest="dataset_command", required=True, metavar="WHAT")
    p = command("export", cmd_dataset_export, "Write labelled demo stories as JSON lines.", parent=datasets)
    p.add_argument("--name", default="demo")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p = command("concepts", cmd_dataset_concepts, "List the planted concepts with kind and lexicon.", parent=datasets)
    p.add_argument("--name", default="demo")

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except MicrowError as err:
        print(f"error: {err}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": str(err), "type": type(err).__name__}))
        return 2
    if args.json:
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
