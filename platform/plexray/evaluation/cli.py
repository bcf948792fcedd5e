"""`plexray evaluate behaviour`: turn-taking, interruptions, backchannels and role adherence of checkpoints."""

from __future__ import annotations

import argparse
import json

from plexray.settings import add_config_arguments, load_platform_config


def register(commands: argparse._SubParsersAction) -> None:
    """Adds `behaviour` to the subcommands of `plexray evaluate`."""
    behaviour = commands.add_parser(
        "behaviour", help="conversations through the serving engine, scored for turn-taking, interruptions, "
                          "backchannels and role adherence; --compare puts two checkpoints side by side")
    which = behaviour.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", default=None, metavar="REF",
                       help="a checkpoint (directory, demo, hf://...) or training checkpoint (LoRA adapter); "
                            "default: model.checkpoint")
    which.add_argument("--compare", nargs=2, default=None, metavar=("BASE", "TUNED"),
                       help="two checkpoints on the same test set, differences tested for significance")
    behaviour.add_argument("--test-set", default=None, metavar="DIR",
                           help="an existing test set (default: build one from evaluation.test_set, evaluation.seed)")
    behaviour.add_argument("--output", default=None, metavar="DIR",
                           help="new directory for the report and audio (default: evaluation.output_dir)")
    add_config_arguments(behaviour)
    behaviour.set_defaults(handler=_behaviour)


def _behaviour(args: argparse.Namespace) -> int:
    from plexray.evaluation.pipeline import check_request, evaluate_behaviour
    from plexray.train.cli import _connect_ray

    config = load_platform_config(args)
    if args.test_set is not None:
        config.evaluation.test_set_dir = args.test_set
    checkpoints = ({"base": args.compare[0], "tuned": args.compare[1]} if args.compare
                   else {"checkpoint": args.checkpoint or config.model.checkpoint})
    output_dir = args.output or config.evaluation.output_dir
    check_request(config, checkpoints, output_dir)  # before a cluster starts
    _connect_ray()
    report = evaluate_behaviour(config, checkpoints, output_dir)
    comparison = report["comparison"]
    significant = [f"{task}.{name}: {d['delta']:+.3g} ({d['better']} better)"
                   for task, metrics in (comparison["differences"] if comparison else {}).items()
                   for name, d in metrics.items() if d["significant"]]
    print(json.dumps({"report": f"{output_dir}/report.md", "asr_backend": report["asr_backend"],
                      "scored": report["scored"], "failed": {k: len(v) for k, v in report["failures"].items()},
                      "judge": report["judge"], "significant": significant}, indent=2))
    return 0
