"""Errors that plexray raises for bad input: each names the thing at fault and the problem."""


class PlexrayError(Exception):
    """Base class: a problem with user input (config, checkpoint, audio, message) explained in words."""


class ConfigError(PlexrayError):
    """A configuration file or override is invalid: names the file, the key and the problem."""


class CheckpointError(PlexrayError):
    """A model checkpoint is missing, unreadable or does not match the expected architecture."""
