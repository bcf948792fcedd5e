"""Errors of the data pipeline: each names the file, item or key at fault."""

from plexray.errors import ConfigError, PlexrayError


class DataError(PlexrayError):
    """A data-generation input (dialogue, audio, dataset directory) is unusable."""


class LibraryError(ConfigError):
    """A persona or scenario file is invalid: names the file, the entry and the key."""


class LLMError(DataError):
    """The chat-completions endpoint failed or answered something unusable, after retries."""


class TTSError(DataError):
    """The speech endpoint failed or answered something that is not usable speech, after retries."""
