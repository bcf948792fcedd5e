"""Errors of the serving app: each one becomes a protocol error message and, where fatal, a close code."""

import enum

from plexray.errors import PlexrayError


class CloseCode(enum.IntEnum):
    """Every WebSocket close code the serving app sends (RFC 6455, section 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the replica is stopping
    INVALID_DATA = 1007  # the client broke the protocol too often
    POLICY = 1008  # refused: key, origin, persona, settings
    INTERNAL_ERROR = 1011  # a fault on this side, not the client's
    TRY_AGAIN_LATER = 1013  # busy, rate limited, admission briefly unavailable


class ProtocolError(PlexrayError):
    """A client message cannot be understood (unknown kind, bad Opus, bad JSON or base64, too large)."""


class AdmissionDenied(PlexrayError):
    """A new session is refused. `reason` names why (metrics label); `close_code` is the WebSocket answer."""

    def __init__(self, reason: str, message: str, close_code: int, retry_after_s: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.close_code = close_code
        self.retry_after_s = retry_after_s
