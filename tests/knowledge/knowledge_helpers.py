"""Helpers of the knowledge tests: the shipped documents, indexing without Ray, a fake embeddings server."""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

import numpy as np

from plexray.knowledge.indexer import process_document

from openai_stub import OpenAICompatibleServer

DOCS = Path(__file__).parent / "docs"
BAD_DOCS = Path(__file__).parent / "bad_docs"
LIBRARY = Path(__file__).parent / "library"
EMBEDDING_DIM = 64


def process_in_loop(sources, known_hashes, config, dense_enabled, workers):
    """index_documents' `process` without Ray: the same plain function, one document after another."""
    return [process_document({"source": source}, known_hashes, config, dense_enabled) for source in sources]


def bag_of_words_vector(text: str) -> list[float]:
    """A deterministic embedding: each word adds 1 to a hashed dimension (similar words -> similar vectors)."""
    vector = np.zeros(EMBEDDING_DIM)
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        if len(word) > 2:
            vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % EMBEDDING_DIM] += 1
    return vector.tolist()


class EmbeddingsServer(OpenAICompatibleServer):
    """An OpenAI-compatible /v1/embeddings; the first request of all is answered 503 (retried), and the
    vectors come back in reverse order (clients must follow each item's `index`)."""

    def __init__(self):
        self.requests = 0
        self._lock = threading.Lock()
        super().__init__(self._answer)

    def _answer(self, path: str, body: dict):
        with self._lock:
            self.requests += 1
            first = self.requests == 1
        if path != "/v1/embeddings":
            return 404, {"error": "not found"}
        if first:
            return 503, {"error": "warming up"}
        data = [{"object": "embedding", "index": i, "embedding": bag_of_words_vector(text)}
                for i, text in enumerate(body["input"])]
        return 200, {"object": "list", "data": data[::-1], "model": body["model"]}
