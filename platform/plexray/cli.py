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


def build_parser() -> argparse.ArgumentParser:
    from plexray import config_cli, demo
    from plexray.model import cli as model_cli
    from plexray.data import cli as data_cli
    from plexray.train import cli as train_cli
    from plexray.serve import cli as serve_cli
    from plexray.knowledge import cli as knowledge_cli

    parser = argparse.ArgumentParser(prog="plexray", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (model_cli, config_cli, demo, data_cli, train_cli, serve_cli, knowledge_cli):
        module.register(subparsers)
    return parser


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
