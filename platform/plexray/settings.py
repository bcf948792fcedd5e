"""The whole platform's configuration: one YAML file, one section per concern."""

from __future__ import annotations

from plexray.config import StrictModel
from plexray.data.config import DataConfig
from plexray.model.config import ModelConfig
from plexray.serve.config import ServeConfig
from plexray.train.config import TrainConfig


class PlexrayConfig(StrictModel):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    serve: ServeConfig = ServeConfig()
