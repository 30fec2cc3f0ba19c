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


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo", help="'demo', a local folder, or a hub id (default: demo)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16 or bfloat16")
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
