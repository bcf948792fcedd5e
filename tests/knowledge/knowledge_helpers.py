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


def pdf_of_lines(lines: list[tuple[str, int, str]]) -> bytes:
    """A one-page PDF drawing (font, size, text) lines top to bottom; font 'regular' is Helvetica, 'bold'
    Helvetica-Bold (standard fonts: no font file needed). Text must not hold parentheses or backslashes."""
    fonts = {"regular": "/F1", "bold": "/F2"}
    operations = ["BT", "50 760 Td"] + [f"{fonts[font]} {size} Tf 0 -{size + 6} Td ({text}) Tj"
                                        for font, size, text in lines] + ["ET"]
    stream = "\n".join(operations).encode("latin-1")
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R /F2 6 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold >>"]
    pdf, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    table = len(pdf)
    pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    pdf += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return pdf + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, table)


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
