"""`plexray model ...`: build the demo checkpoint, inspect any checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="model checkpoints: build the demo one, inspect any")
    commands = model.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")

    init = commands.add_parser("init-demo", help="write the small, randomly initialised demo checkpoint")
    init.add_argument("directory", type=Path, help="new (or empty) directory to write")
    init.add_argument("--family", choices=["personaplex", "moshi"], default="personaplex")
    init.set_defaults(handler=_init_demo)

    inspect = commands.add_parser("inspect", help="load a checkpoint and print a JSON summary")
    inspect.add_argument("checkpoint", help="hf://owner/repo[@revision], a local directory, or 'demo'")
    inspect.add_argument("--family", choices=["personaplex", "moshi"], default=None)
    inspect.set_defaults(handler=_inspect)


def _init_demo(args: argparse.Namespace) -> int:
    from plexray.model.demo import init_demo

    path = init_demo(args.directory, family=args.family)
    print(f"demo checkpoint ({args.family}) written to {path}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from plexray.model import load_model

    bundle = load_model(args.checkpoint, family=args.family)
    summary = {
        "checkpoint": args.checkpoint,
        "family": bundle.family,
        "lm_parameters": sum(p.numel() for p in bundle.lm.parameters()),
        "mimi_parameters": sum(p.numel() for p in bundle.mimi.parameters()),
        "dep_q": bundle.lm.dep_q,
        "text_vocabulary": bundle.tokenizer.vocab_size(),
        "voices": sorted(bundle.voices),
        "prompt_codes": bundle.prompt_codes.to_json(),
        "files": {k: str(v) for k, v in vars(bundle.files).items() if v is not None},
    }
    print(json.dumps(summary, indent=2))
    return 0
