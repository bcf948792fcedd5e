"""The passages and their lexical index: one SQLite file with an FTS5 table, ranked by BM25.

SQLite's FTS5 ships with Python (no dependency, no model), ranks with BM25 (`bm25()`), updates in
place (the passages of a changed document are deleted and re-inserted, nothing else is touched) and
answers from disk without loading the index into memory. The Porter stemmer lets 'opening hours'
find 'open ... hour'. A query is the OR of its words, so any shared word can match and BM25's term
weights rank the passages.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import typing as tp
from pathlib import Path

from plexray.knowledge.chunking import Chunk
from plexray.knowledge.words import FUNCTION_WORDS

SCHEMA = ("CREATE VIRTUAL TABLE IF NOT EXISTS passages USING fts5("
          "chunk_id UNINDEXED, source UNINDEXED, ordinal UNINDEXED, section UNINDEXED, text, "
          "tokenize='porter unicode61')")
QUERY_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_WORDS = 64  # a query is a handful of words; beyond this they add cost, not precision


def match_expression(query: str) -> str | None:
    """The FTS5 MATCH expression of a free-text query: each word quoted (no FTS5 syntax gets through),
    joined with OR; None when the query has no words. Function words are dropped unless the query has
    nothing else: they match most passages, which the search would then all have to rank."""
    words = list(dict.fromkeys(word.lower() for word in QUERY_WORD.findall(query)))
    words = ([word for word in words if word not in FUNCTION_WORDS] or words)[:MAX_QUERY_WORDS]
    return " OR ".join(f'"{word}"' for word in words) or None


def connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path)
    connection.execute(SCHEMA)
    return connection


def replace_documents(connection: sqlite3.Connection, sources: tp.Iterable[str], chunks: tp.Iterable[Chunk]) -> None:
    """Delete every passage of `sources`, then insert `chunks`, in one transaction."""
    with connection:
        connection.executemany("DELETE FROM passages WHERE source = ?", [(source,) for source in sources])
        connection.executemany("INSERT INTO passages VALUES (?, ?, ?, ?, ?)",
                               [(c.chunk_id, c.source, c.ordinal, c.section, c.text) for c in chunks])


def count_passages(connection: sqlite3.Connection) -> int:
    return connection.execute("SELECT count(*) FROM passages").fetchone()[0]


class LexicalIndex:
    """Read-only searches; one SQLite connection per thread (a connection must stay in its thread)."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise FileNotFoundError(path)
        self.path = path
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            self._local.connection = connection
        return connection

    def count(self) -> int:
        return count_passages(self._connection())

    def passages(self) -> list[Chunk]:
        """Every passage, by document and then in document order (what `knowledge show` lists)."""
        rows = self._connection().execute(
            "SELECT chunk_id, source, ordinal, section, text FROM passages "
            "ORDER BY source, CAST(ordinal AS INTEGER)").fetchall()
        return [Chunk(chunk_id, source, int(ordinal), section, text)
                for chunk_id, source, ordinal, section, text in rows]

    def search(self, query: str, limit: int) -> list[tuple[Chunk, float]]:
        """The best `limit` passages and their BM25 scores (higher is better)."""
        expression = match_expression(query)
        if expression is None:
            return []
        rows = self._connection().execute(
            "SELECT chunk_id, source, ordinal, section, text, bm25(passages) FROM passages "
            "WHERE passages MATCH ? ORDER BY bm25(passages) LIMIT ?", (expression, limit)).fetchall()
        # SQLite's bm25() is negated so that ascending order is best first; turned back here.
        return [(Chunk(chunk_id, source, int(ordinal), section, text), -score)
                for chunk_id, source, ordinal, section, text, score in rows]
