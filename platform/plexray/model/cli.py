"""`plexray model ...` (build the demo checkpoint, inspect any) and `plexray voices make`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="model checkpoints: build the demo one, inspect any")
    commands = model.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")

    init = commands.add_parser("init-demo", help="write the small, randomly initialised demo checkpoint")
    init.add_argument("directory", type=Path, help="new (or empty) directory to write")
    init.add_argument("--family", choices=["personaplex", "moshi"], default="personaplex",
                      help="personaplex: NVIDIA's (voice and text prompts); moshi: Kyutai's base architecture")
    init.set_defaults(handler=_init_demo)

    inspect = commands.add_parser("inspect", help="load a checkpoint and print a JSON summary")
    inspect.add_argument("checkpoint", help="hf://owner/repo[@revision], a local directory, or 'demo'")
    inspect.add_argument("--family", choices=["personaplex", "moshi"], default=None,
                         help="default: from the checkpoint's config.json")
    inspect.set_defaults(handler=_inspect)

    voices = subparsers.add_parser("voices", help="voice prompts in NVIDIA's layout")
    voice_commands = voices.add_subparsers(dest="voices_command", required=True, metavar="SUBCOMMAND")
    make = voice_commands.add_parser(
        "make", help="write NAME.pt (NVIDIA's voice layout, works in NVIDIA's server too) and the -24 LUFS "
                     "NAME.wav for each speech sample")
    make.add_argument("samples", nargs="+", type=Path, help="audio files (any format sphn reads), one voice each")
    make.add_argument("--checkpoint", required=True, help="the model the voices are for (their .pt depends on it)")
    make.add_argument("--family", choices=["personaplex"], default=None,
                      help="default: from the checkpoint's config.json")
    make.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                      help="dtype of the model that will replay them (NVIDIA's server: bfloat16)")
    make.add_argument("--output-dir", type=Path, default=Path("voices"), help="default: ./voices")
    make.set_defaults(handler=_make_voices)


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


def _make_voices(args: argparse.Namespace) -> int:
    import torch

    from plexray.model import load_model
    from plexray.model.voice_prefill import make_voice_files

    bundle = load_model(args.checkpoint, family=args.family, dtype=getattr(torch, args.dtype))
    for sample in args.samples:
        wav_path, pt_path = make_voice_files(bundle, sample, args.output_dir)
        print(f"{sample.stem}: {pt_path} (NVIDIA's layout) and {wav_path} (-24 LUFS)")
    return 0
