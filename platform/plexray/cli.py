"""The `plexray` command line: one entry point shared by jobs, the Serve app and the demo.

Each concern registers its own subcommands (`register(subparsers)` in its `cli` module).
Bad input ends with a one-line (or few-line) error naming the problem, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import typing as tp

from plexray.errors import PlexrayError

DESCRIPTION = ("Fine-tune and serve NVIDIA's PersonaPlex full-duplex speech model on Ray: training data (Ray "
               "Data), LoRA fine-tuning (Ray Train), behavioural evaluation, serving (Ray Serve) and knowledge "
               "bases. New here? Run `plexray demo --config configs/demo.yaml`: every step, end to end.")


def build_parser() -> argparse.ArgumentParser:
    from plexray import config_cli, demo
    from plexray.model import cli as model_cli
    from plexray.data import cli as data_cli
    from plexray.train import cli as train_cli
    from plexray.serve import cli as serve_cli
    from plexray.knowledge import cli as knowledge_cli

    parser = argparse.ArgumentParser(prog="plexray", description=DESCRIPTION)
    parser.add_argument("--log-level", default="INFO", help="logging level: DEBUG, INFO, WARNING, ERROR")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (model_cli, config_cli, demo, data_cli, train_cli, serve_cli, knowledge_cli):
        module.register(subparsers)
    _describe_every_command(parser)
    return parser


class _HelpWithDefaults(argparse.HelpFormatter):
    """argparse's help, with each option's default where it has one worth saying and its help does not."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _describe_every_command(parser: argparse.ArgumentParser) -> None:
    """Every subcommand's own --help opens with the line its parent lists it with, and shows defaults."""
    parser.formatter_class = _HelpWithDefaults
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            for name, command in action.choices.items():
                command.description = command.description or listed.get(name)
                _describe_every_command(command)


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except PlexrayError as exc:
        print(f"plexray {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
