"""Errors of fine-tuning: each says what is wrong with the data, the adapter or the run."""

from plexray.errors import CheckpointError, PlexrayError


class TrainingDataError(PlexrayError):
    """The training set is missing, has the wrong schema, or a row has the wrong codebook count."""


class AdapterMismatchError(CheckpointError):
    """A LoRA adapter (or fine-tuned checkpoint) does not fit the base model it is loaded onto."""


class TrainingDivergedError(PlexrayError):
    """Too many consecutive steps had a non-finite loss; the last good checkpoint is kept."""
