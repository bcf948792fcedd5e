"""POST to an OpenAI-compatible endpoint (vLLM, gpt-oss, an embeddings server, a speech server): retries,
backoff, a cap on requests in flight. The dialogue LLM's chat client and the knowledge bases' embeddings
client call `post_json`; the data pipeline's speech synthesizer calls `post` (its answers are audio bytes).

Retried: connection errors, 408/409/425/429 and 5xx answers, and replies `parse` cannot use;
not retried: any other HTTP error (400, 401, 404: retrying will not help).
"""

from __future__ import annotations

import functools
import threading
import time
import typing as tp

import httpx
import pydantic

from plexray.config import StrictModel
from plexray.errors import PlexrayError

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
# What `parse` raises for a reply it cannot use (retried, then named in the error).
UNUSABLE_REPLY = (ValueError, KeyError, IndexError, TypeError)
T = tp.TypeVar("T")

_SEMAPHORES: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_SEMAPHORES_LOCK = threading.Lock()


class EndpointConfig(StrictModel):
    """How plexray talks to one OpenAI-compatible endpoint. Each use (dialogue LLM, judge, embeddings, speech)
    is a subclass that names its endpoint (`base_url`, `api_key_env`: defaults and descriptions of its own)
    and adds its request fields."""

    base_url: str | None = pydantic.Field(None, description="e.g. http://host:8000/v1")
    api_key_env: str = pydantic.Field(description="environment variable holding the key")
    timeout_s: float = pydantic.Field(60.0, gt=0)
    max_retries: int = pydantic.Field(4, ge=0)
    backoff_s: float = pydantic.Field(1.0, ge=0, description="first retry delay; doubles per retry")
    max_concurrency: int = pydantic.Field(4, ge=1, description="requests in flight at once per process")


def _semaphore(base_url: str, limit: int) -> threading.BoundedSemaphore:
    """At most `limit` requests in flight to `base_url` from this process, whichever client sends them."""
    with _SEMAPHORES_LOCK:
        return _SEMAPHORES.setdefault((base_url, limit), threading.BoundedSemaphore(limit))


@functools.cache
def _client() -> httpx.Client:
    """One connection pool per process, shared by every thread: `httpx.post` builds a client (and its TLS
    context) per call, about 30 ms each, which was most of a short request to a speech server on loopback."""
    return httpx.Client()


def post(base_url: str, path: str, body: dict, api_key: str, settings: EndpointConfig,
         parse: tp.Callable[[httpx.Response], T], error: type[PlexrayError]) -> T:
    """`parse(response)` of `POST {base_url}{path}` answered 200; raises `error` naming the endpoint after the last try."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    problem = "no attempt made"
    for attempt in range(settings.max_retries + 1):
        if attempt:
            time.sleep(settings.backoff_s * 2 ** (attempt - 1))
        try:
            with _semaphore(base_url, settings.max_concurrency):
                response = _client().post(f"{base_url}{path}", json=body, headers=headers, timeout=settings.timeout_s)
        except httpx.HTTPError as exc:
            problem = f"request failed: {type(exc).__name__}: {exc}"
            continue
        if response.status_code in RETRY_STATUS:
            problem = f"HTTP {response.status_code}: {response.text[:200]}"
            continue
        if response.status_code != 200:
            raise error(f"{base_url}: HTTP {response.status_code}: {response.text[:300]}")
        try:
            return parse(response)
        except UNUSABLE_REPLY as exc:
            problem = f"unusable reply: {type(exc).__name__}: {exc}"
    raise error(f"{base_url}: gave up after {settings.max_retries + 1} attempts; last: {problem}")


def post_json(base_url: str, path: str, body: dict, api_key: str, settings: EndpointConfig,
              parse: tp.Callable[[tp.Any], T], error: type[PlexrayError]) -> T:
    """`parse(reply JSON)` of `POST {base_url}{path}`: `post` for the endpoints that answer JSON."""
    return post(base_url, path, body, api_key, settings, lambda response: parse(response.json()), error)
