"""The whole platform's configuration: one YAML file, one section per concern."""

from __future__ import annotations

import argparse

from plexray.config import StrictModel, load_config
from plexray.data.config import DataConfig
from plexray.evaluation.config import EvaluationConfig
from plexray.knowledge.config import KnowledgeConfig
from plexray.model.config import ModelConfig
from plexray.serve.config import ServeConfig
from plexray.train.config import TrainConfig


class PlexrayConfig(StrictModel):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    serve: ServeConfig = ServeConfig()
    knowledge: KnowledgeConfig = KnowledgeConfig()
    evaluation: EvaluationConfig = EvaluationConfig()


# The --set example each command's help shows: a key that command reads.
_OVERRIDE_EXAMPLES = {"data": "data.max_conversations=10", "train": "train.max_steps=20",
                      "evaluate": "evaluation.batch_size=4", "merge": "model.checkpoint=demo",
                      "serve": "serve.sessions_per_replica=4", "knowledge": "knowledge.index_workers=2",
                      "demo": "train.max_steps=10", "config": "train.max_steps=20"}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config FILE and repeated --set KEY=VALUE, for commands that read the platform config."""
    command = parser.prog.split()[1] if len(parser.prog.split()) > 1 else ""
    example = _OVERRIDE_EXAMPLES.get(command, "train.max_steps=20")
    parser.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
    parser.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config value, e.g. --set {example} (repeatable; see `plexray config "
                             "reference`)")


def load_platform_config(args: argparse.Namespace) -> PlexrayConfig:
    """The config that `add_config_arguments`'s options name."""
    return load_config(PlexrayConfig, args.config, args.overrides)
