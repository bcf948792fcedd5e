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


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config FILE and repeated --set KEY=VALUE, for commands that read the platform config."""
    parser.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
    parser.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.max_steps=20 (repeatable)")


def load_platform_config(args: argparse.Namespace) -> PlexrayConfig:
    """The config that `add_config_arguments`'s options name."""
    return load_config(PlexrayConfig, args.config, args.overrides)
