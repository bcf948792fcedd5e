"""The passages' vectors in LanceDB: an embedded, Arrow-native vector store in the base's directory.

LanceDB needs no server, stores a table as files (local or object storage), searches by cosine
distance, and deletes and appends rows in place, so re-indexing touches only changed documents.
Vectors are unit-normalised before they are stored and searched.
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

import numpy as np
import pyarrow as pa

from plexray.knowledge.chunking import Chunk

TABLE = "passages"


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _table(chunks: tp.Sequence[Chunk], vectors: np.ndarray) -> pa.Table:
    flat = pa.array(_normalised(vectors).astype(np.float32).ravel())
    return pa.table({
        "chunk_id": [c.chunk_id for c in chunks], "source": [c.source for c in chunks],
        "ordinal": [c.ordinal for c in chunks], "section": [c.section for c in chunks],
        "text": [c.text for c in chunks], "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
    })


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def replace_documents(directory: Path, sources: tp.Sequence[str], chunks: tp.Sequence[Chunk],
                      vectors: np.ndarray) -> None:
    """Delete the vectors of `sources`, then add those of `chunks` (rows of `vectors`, same order)."""
    import lancedb

    database = lancedb.connect(str(directory))
    if TABLE not in database.list_tables().tables:
        if chunks:
            database.create_table(TABLE, _table(chunks, vectors))
        return
    table = database.open_table(TABLE)
    for start in range(0, len(sources), 256):  # a bounded filter expression per delete
        table.delete(f"source IN ({', '.join(_quoted(s) for s in sources[start:start + 256])})")
    if chunks:
        table.add(_table(chunks, vectors))


class DenseIndex:
    def __init__(self, directory: Path):
        import lancedb

        self.table = lancedb.connect(str(directory)).open_table(TABLE)

    def count(self) -> int:
        return self.table.count_rows()

    def search(self, vector: np.ndarray, limit: int) -> list[tuple[Chunk, float]]:
        """The `limit` nearest passages and their cosine similarity (higher is better)."""
        query = _normalised(np.asarray(vector, np.float32)[None])[0]
        rows = self.table.search(query).metric("cosine").limit(limit).to_arrow().to_pylist()
        return [(Chunk(row["chunk_id"], row["source"], int(row["ordinal"]), row["section"], row["text"]),
                 1.0 - float(row["_distance"])) for row in rows]
