"""Who may open a session: API keys (constant-time), allowed origins, the client's address; log-safe
URLs and log lines."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import typing as tp
import urllib.parse

from plexray.serve.app.errors import AdmissionDenied, CloseCode
from plexray.serve.config import SecurityConfig

SECRET_PARAMETERS = ("api_key", "token", "key")


@dataclasses.dataclass(frozen=True)
class Caller:
    """What admission knows about a caller: its address and the name (never the secret) of its key."""

    address: str
    key_name: str | None = None
    key_session_limit: int | None = None


class Gatekeeper:
    """Checks origin and API key of a WebSocket handshake; raises AdmissionDenied (close 1008) on failure."""

    def __init__(self, config: SecurityConfig):
        self.config = config
        # Compare fixed-length digests, every key every time: timing reveals neither key nor match position.
        self._keys = [(hashlib.sha256(key.secret().encode()).digest(), key.name, key.max_sessions)
                      for key in config.api_keys]

    @property
    def keys_required(self) -> bool:
        return bool(self._keys)

    def check(self, headers: tp.Mapping[str, str], query: tp.Mapping[str, str],
              client: tuple[str, int] | None) -> Caller:
        self._check_origin(headers.get("origin"))
        address = client_address(headers, client, self.config.trust_forwarded_for)
        if not self._keys:
            return Caller(address)
        presented = presented_key(headers, query)
        if presented is None:
            raise AdmissionDenied("unauthorized", "an API key is required (Authorization: Bearer KEY, X-API-Key "
                                                  "header or api_key query parameter)", CloseCode.POLICY)
        digest = hashlib.sha256(presented.encode()).digest()
        match = None
        for key_digest, name, limit in self._keys:
            if hmac.compare_digest(digest, key_digest) and match is None:
                match = (name, limit)
        if match is None:
            raise AdmissionDenied("unauthorized", "invalid API key", CloseCode.POLICY)
        return Caller(address, match[0], match[1])

    def _check_origin(self, origin: str | None) -> None:
        allowed = self.config.allowed_origins
        if origin is None or not allowed or "*" in allowed or origin in allowed:
            return
        raise AdmissionDenied("origin", f"origin {origin!r} is not allowed", CloseCode.POLICY)


def presented_key(headers: tp.Mapping[str, str], query: tp.Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return headers.get("x-api-key") or query.get("api_key") or None


def client_address(headers: tp.Mapping[str, str], client: tuple[str, int] | None, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for and headers.get("x-forwarded-for"):
        return headers["x-forwarded-for"].split(",")[0].strip()
    return client[0] if client else "unknown"


# Longer text arguments of a log line are cut: caller input quoted whole would let each call grow the log by
# kilobytes. Enough for any real persona name, label or error message, and a query's first part.
MAX_LOGGED_TEXT_CHARS = 300


def redact_query(query_string: str) -> str:
    """The query string with secret parameters replaced by '***', for logs."""
    pairs = urllib.parse.parse_qsl(query_string, keep_blank_values=True)
    return urllib.parse.urlencode([(k, "***" if k.lower() in SECRET_PARAMETERS else v) for k, v in pairs])


class EscapeControlCharacters(logging.Filter):
    """Escapes newline, CR, NUL and every other control character in a log line's arguments, and cuts long ones.

    Arguments carry caller input (session labels, persona names, query values, error texts that quote
    them): raw, a newline in one would forge a log line of its own.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(log_safe(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: log_safe(value) for key, value in record.args.items()}
        return True


def log_safe(value: tp.Any) -> tp.Any:
    """Text (or an exception's text) cut to MAX_LOGGED_TEXT_CHARS, control characters backslash-escaped;
    other values as they are."""
    if isinstance(value, (str, BaseException)):
        text = str(value)
        if len(text) > MAX_LOGGED_TEXT_CHARS:  # a caller's 4,000-character persona name, quoted whole, per call
            text = f"{text[:MAX_LOGGED_TEXT_CHARS]}... ({len(text)} characters)"
        if text.isprintable():
            return text
        return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
                       for char in text)
    return value


def replica_logger() -> logging.Logger:
    """Serve's logger (its lines land in the replica logs), escaping caller input in every line."""
    logger = logging.getLogger("ray.serve")
    if not any(isinstance(existing, EscapeControlCharacters) for existing in logger.filters):
        logger.addFilter(EscapeControlCharacters())
    return logger
