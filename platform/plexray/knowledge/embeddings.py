"""An OpenAI-compatible embeddings client (`POST {base_url}/embeddings`), for dense retrieval.

The same conventions as the dialogue LLM's chat client (plexray.data.dialogue.llm): base URL from
the config or the environment, key from the environment variable the config names, retries with
exponential backoff on connection errors, 429 and 5xx answers and unusable replies, and at most
`max_concurrency` requests per process in flight.
"""

from __future__ import annotations

import os
import threading
import time
import typing as tp

import httpx
import numpy as np

from plexray.data.dialogue.llm import RETRY_STATUS
from plexray.knowledge.config import EmbeddingsConfig
from plexray.knowledge.errors import EmbeddingsError

BASE_URL_ENV = "PLEXRAY_EMBEDDINGS_BASE_URL"

_SEMAPHORES: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_SEMAPHORES_LOCK = threading.Lock()


def _semaphore(base_url: str, limit: int) -> threading.BoundedSemaphore:
    with _SEMAPHORES_LOCK:
        return _SEMAPHORES.setdefault((base_url, limit), threading.BoundedSemaphore(limit))


def _vectors(reply: dict, expected: int) -> np.ndarray:
    data = sorted(reply["data"], key=lambda item: item["index"])  # the API may answer out of order
    if len(data) != expected:
        raise ValueError(f"{len(data)} embeddings for {expected} inputs")
    vectors = np.asarray([item["embedding"] for item in data], dtype=np.float32)
    if vectors.ndim != 2 or not np.isfinite(vectors).all():
        raise ValueError("embeddings are not equal-length lists of finite numbers")
    return vectors


class EmbeddingsClient:
    def __init__(self, config: EmbeddingsConfig):
        base_url = config.base_url or os.environ.get(BASE_URL_ENV)
        if not base_url:
            raise EmbeddingsError(f"no embeddings endpoint: set knowledge.embeddings.base_url or ${BASE_URL_ENV}")
        self.base_url = base_url.rstrip("/")
        self.config = config
        self.api_key = os.environ.get(config.api_key_env, "")

    def embed(self, texts: tp.Sequence[str]) -> np.ndarray:
        """[len(texts), dim] float32, in requests of `batch_size` texts."""
        if not texts:
            return np.zeros((0, 0), np.float32)
        size = self.config.batch_size
        return np.concatenate([self._request(list(texts[start:start + size])) for start in range(0, len(texts), size)])

    def _request(self, texts: list[str]) -> np.ndarray:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.config.model, "input": texts, "encoding_format": "float"}
        problem = "no attempt made"
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            try:
                with _semaphore(self.base_url, self.config.max_concurrency):
                    response = httpx.post(f"{self.base_url}/embeddings", json=body, headers=headers,
                                          timeout=self.config.timeout_s)
            except httpx.HTTPError as exc:
                problem = f"request failed: {type(exc).__name__}: {exc}"
                continue
            if response.status_code in RETRY_STATUS:
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code != 200:  # 400, 401, 404...: retrying will not help
                raise EmbeddingsError(f"{self.base_url}: HTTP {response.status_code}: {response.text[:300]}")
            try:
                return _vectors(response.json(), len(texts))
            except (ValueError, KeyError, TypeError) as exc:
                problem = f"unusable reply: {type(exc).__name__}: {exc}"
        raise EmbeddingsError(f"{self.base_url}: gave up after {self.config.max_retries + 1} attempts; last: {problem}")
