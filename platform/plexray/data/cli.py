"""`plexray data ...`: generate a training set, ingest recorded conversations, export/import moshi-finetune data,
back-annotate prompts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from plexray.settings import add_config_arguments, load_platform_config


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="training data: generate, ingest, export, import, annotate")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    generate = commands.add_parser("generate", help="personas -> dialogues -> speech -> Mimi codes -> shards "
                                                    "(resumes an interrupted run)")
    add_config_arguments(generate)
    generate.set_defaults(handler=_generate)

    ingest = commands.add_parser("ingest", help="recorded conversations (jsonl index of stereo or two mono files) -> "
                                                "ASR per channel -> shards in data.output_dir (resumes)")
    ingest.add_argument("index", type=Path, help="the .jsonl index (format: plexray/data/README.md, 'data ingest')")
    add_config_arguments(ingest)
    ingest.set_defaults(handler=_ingest)

    export = commands.add_parser("export", help="shards -> moshi-finetune layout (stereo wav + alignment json + jsonl)")
    export.add_argument("target", type=Path, help="directory to write")
    add_config_arguments(export)
    export.set_defaults(handler=_export)

    importer = commands.add_parser("import", help="moshi-finetune recordings (jsonl index) -> shards in data.output_dir")
    importer.add_argument("index", type=Path, help="the .jsonl index of stereo wavs")
    importer.add_argument("--system-prompt", default="You are a helpful assistant.",
                          help="role prompt for recordings whose json has no system_prompt")
    add_config_arguments(importer)
    importer.set_defaults(handler=_import)

    annotate = commands.add_parser("annotate", help="write system prompts for your transcripts (JSONL) with the LLM")
    annotate.add_argument("transcripts", type=Path, help="JSONL: {id, turns: [{speaker, text}]} per line")
    annotate.add_argument("output", type=Path, help="JSONL to write (input lines + system_prompt)")
    add_config_arguments(annotate)
    annotate.set_defaults(handler=_annotate)


def _print_manifest(manifest: dict, *extra_keys: str) -> int:
    keys = ("status", "planned", "written", "rejected", "missing", "reconciled", "run", "rejects_by_reason",
            "hours_of_audio", "alignment", "late_words", *extra_keys)
    print(json.dumps({key: manifest[key] for key in keys}, indent=2))
    return 0 if manifest["reconciled"] else 1


def _generate(args: argparse.Namespace) -> int:
    from plexray.data.pipeline import generate

    return _print_manifest(generate(load_platform_config(args)))


def _ingest(args: argparse.Namespace) -> int:
    from plexray.data.ingest.run import ingest

    return _print_manifest(ingest(args.index, load_platform_config(args)), "ingest")


def _export(args: argparse.Namespace) -> int:
    from plexray.data.moshi_finetune import export_dataset

    config = load_platform_config(args)
    print(json.dumps(export_dataset(Path(config.data.output_dir), args.target, config.model), indent=2))
    return 0


def _import(args: argparse.Namespace) -> int:
    from plexray.data.moshi_finetune import import_dataset

    return _print_manifest(import_dataset(args.index, load_platform_config(args), args.system_prompt))


def _annotate(args: argparse.Namespace) -> int:
    from plexray.data.annotate import annotate_file

    config = load_platform_config(args)
    print(json.dumps(annotate_file(args.transcripts, args.output, config.data.dialogue.llm), indent=2))
    return 0
