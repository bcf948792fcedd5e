"""Errors of knowledge bases: each names the base, the document or the setting at fault."""

from plexray.errors import ConfigError, PlexrayError


class KnowledgeError(PlexrayError):
    """A knowledge base is missing, empty or unreadable, or an index run failed."""


class KnowledgeConfigError(ConfigError):
    """A persona or scenario names a knowledge base that cannot be served (missing, empty, no vectors)."""


class EmbeddingsError(KnowledgeError):
    """The embeddings endpoint failed or answered something unusable, after retries."""
