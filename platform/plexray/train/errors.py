"""Errors of fine-tuning: each says what is wrong with the data, the adapter or the run."""

from plexray.errors import CheckpointError, PlexrayError


class TrainingDataError(PlexrayError):
    """The training set is missing, has the wrong schema, or a row has the wrong codebook count."""


class AdapterMismatchError(CheckpointError):
    """A LoRA adapter (or fine-tuned checkpoint) does not fit the base model it is loaded onto."""


class TrainingDivergedError(PlexrayError):
    """Too many consecutive steps had a non-finite loss; the last good checkpoint is kept."""


class DamagedCheckpointError(CheckpointError):
    """A file a resume needs is missing from a training checkpoint, or cannot be read (cut short, garbled)."""

    def __init__(self, file: str, reason: str):
        super().__init__(file, reason)  # as args, so that the error survives pickling between Ray processes
        self.file, self.reason = file, reason

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


class NoIntactCheckpointError(CheckpointError):
    """Every checkpoint of the run that a resume could start from is damaged."""
