"""Errors of the serving app: each one becomes a protocol error message and, where fatal, a close code."""

from plexray.errors import PlexrayError


class ProtocolError(PlexrayError):
    """A client message cannot be understood (unknown kind, bad Opus, bad JSON or base64, too large)."""


class AdmissionDenied(PlexrayError):
    """A new session is refused. `reason` names why (metrics label); `close_code` is the WebSocket answer."""

    def __init__(self, reason: str, message: str, close_code: int, retry_after_s: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.close_code = close_code
        self.retry_after_s = retry_after_s
