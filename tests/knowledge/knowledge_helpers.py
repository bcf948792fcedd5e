"""Helpers of the knowledge tests: the shipped documents, indexing without Ray, a fake embeddings server."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from plexray.knowledge.indexer import process_document

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


class EmbeddingsServer:
    """An OpenAI-compatible /v1/embeddings on 127.0.0.1; the first request of all is answered 503 (retried)."""

    def __init__(self):
        self.requests = 0
        self.lock = threading.Lock()
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with state.lock:
                    state.requests += 1
                    first = state.requests == 1
                if self.path != "/v1/embeddings":
                    status, payload = 404, {"error": "not found"}
                elif first:
                    status, payload = 503, {"error": "warming up"}
                else:
                    data = [{"object": "embedding", "index": i, "embedding": bag_of_words_vector(text)}
                            for i, text in enumerate(body["input"])]
                    status, payload = 200, {"object": "list", "data": data[::-1], "model": body["model"]}
                encoded = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(encoded)))
                self.end_headers()
                self.wfile.write(encoded)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "EmbeddingsServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
