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
    from .layers import layer_aliases

    lm = _load(args)
    catalogue = lm.catalogue()
    shapes = {info.name: info.output_shape for info in catalogue}
    aliases = {}
    for alias, ref in layer_aliases(lm.model).items():
        shape = shapes.get(ref.module_name or "model")
        if ref.pre:  # a block's input has the shape of the residual stream
            shape = (shape[0], shape[1], lm.d_model) if shape else None
        aliases[alias] = {"module": ref.module_name, "pre": ref.pre, "shape": list(shape) if shape else None}
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
