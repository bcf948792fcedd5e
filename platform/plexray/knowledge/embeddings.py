"""An OpenAI-compatible embeddings client (`POST {base_url}/embeddings`), for dense retrieval.

The same conventions as the dialogue LLM's chat client (plexray.data.dialogue.llm): base URL from
the config or the environment, key from the environment variable the config names, requests
through `plexray.openai_compat.post_json` (retries, backoff, concurrency cap).
"""

from __future__ import annotations

import os
import typing as tp

import numpy as np

from plexray.knowledge.config import EmbeddingsConfig
from plexray.knowledge.errors import EmbeddingsError
from plexray.openai_compat import post_json

BASE_URL_ENV = "PLEXRAY_EMBEDDINGS_BASE_URL"

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
        body = {"model": self.config.model, "input": texts, "encoding_format": "float"}
        return post_json(self.base_url, "/embeddings", body, self.api_key, self.config,
                         lambda reply: _vectors(reply, len(texts)), EmbeddingsError)
