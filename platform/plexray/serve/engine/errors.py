"""Errors the engine raises for bad requests and bad input (all PlexrayError: one clear line each)."""

from plexray.errors import PlexrayError


class EngineFullError(PlexrayError):
    """Every session slot is taken: the caller should answer 'busy, retry later'."""


class EngineUnavailableError(PlexrayError):
    """The engine takes no sessions: it was closed, or a tick failed it (the message names that error)."""


class BadAudioError(PlexrayError):
    """Audio pushed into a session cannot be used (not a 1-D/mono array of numbers, or an unusable rate)."""


class SessionSettingsError(PlexrayError):
    """A session asked for something the engine cannot give (unknown voice, too long a prompt, ...)."""
