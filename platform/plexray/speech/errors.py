"""Errors of the speech tools: bad audio, and a speech backend that is not installed."""

from plexray.errors import PlexrayError


class SpeechError(PlexrayError):
    """Audio the speech tools cannot use (empty, not finite, wrong shape or rate): names the problem."""


class BackendMissing(SpeechError):
    """A speech backend's package is not installed: names exactly what to `pip install`."""
