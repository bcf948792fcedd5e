"""A knowledge base opened for searching: the passages that best match a query, lexical or dense."""

from __future__ import annotations

import collections
import dataclasses
import typing as tp
from pathlib import Path

from plexray.knowledge import storage
from plexray.knowledge.chunking import Chunk
from plexray.knowledge.config import KnowledgeConfig, RetrievalMode
from plexray.knowledge.errors import KnowledgeError


@dataclasses.dataclass(frozen=True)
class Passage:
    chunk: Chunk
    score: float  # BM25 (lexical) or cosine similarity (dense); higher is better, comparable within one search

    @property
    def text(self) -> str:
        return self.chunk.text

    def to_json(self) -> dict:
        return {"id": self.chunk.chunk_id, "source": self.chunk.source, "section": self.chunk.section,
                "text": self.chunk.text, "score": round(self.score, 4)}


class KnowledgeBase:
    """Open once (a replica or a driver), search from any thread."""

    def __init__(self, name: str, directory: Path, manifest: dict, config: KnowledgeConfig):
        from plexray.knowledge.lexical import LexicalIndex

        self.name = name
        self.directory = directory
        self.manifest = manifest
        self.config = config
        self.lexical = LexicalIndex(directory / storage.PASSAGES_DB)
        self._dense = None
        self._embeddings = None

    @classmethod
    def open(cls, config: KnowledgeConfig, name: str) -> "KnowledgeBase":
        """The base `name` under config.root; raises KnowledgeError when it is missing or has no passages."""
        location = storage.base_location(config.root, name)
        manifest = storage.read_manifest_at(location)
        if manifest is None:
            raise KnowledgeError(f"knowledge base {name!r} does not exist at {location} (create it with "
                                 f"`plexray knowledge index DOCS... --name {name}`)")
        if not manifest.get("passages"):
            skipped = "; ".join(f"{s['source']}: {s['reason']}" for s in manifest.get("skipped", [])[:3])
            raise KnowledgeError(f"knowledge base {name!r} at {location} is empty: no passages"
                                 + (f" (skipped: {skipped})" if skipped else ""))
        return cls(name, storage.local_copy(location, config.cache_dir), manifest, config)

    @property
    def has_vectors(self) -> bool:
        return self.manifest.get("dense") is not None

    def contents(self) -> dict:
        """What the base holds (`knowledge show`): each document as the manifest has it (kind, content
        hash) with its passages, and the documents skipped at the last index run, with the reasons."""
        passages: dict[str, list[Chunk]] = collections.defaultdict(list)
        for chunk in self.lexical.passages():
            passages[chunk.source].append(chunk)
        documents = [{"source": source, "title": entry.get("title"), "kind": entry.get("kind"),
                      "hash": entry.get("hash"),
                      "passages": [{"id": c.chunk_id, "section": c.section, "text": c.text} for c in passages[source]]}
                     for source, entry in sorted(self.manifest.get("documents", {}).items())]
        return {"name": self.name, "directory": str(self.directory), "updated": self.manifest.get("updated"),
                "passages": self.manifest["passages"], "dense": self.manifest.get("dense"),
                "chunking": self.manifest.get("chunking"), "documents": documents,
                "skipped": self.manifest.get("skipped", [])}

    def check_mode(self, mode: RetrievalMode) -> None:
        """Raise KnowledgeError if this base cannot be searched in `mode` (checked at deploy time)."""
        if mode == "lexical":
            return
        if not self.has_vectors:
            raise KnowledgeError(f"knowledge base {self.name!r} has no vectors: index it with --dense for mode 'dense'")
        indexed_with = self.manifest["dense"]["model"]
        if indexed_with != self.config.embeddings.model:
            raise KnowledgeError(f"knowledge base {self.name!r} was embedded with {indexed_with!r}; "
                                 f"knowledge.embeddings.model is {self.config.embeddings.model!r}")

    def search(self, query: str, top_k: int, mode: RetrievalMode = "lexical") -> list[Passage]:
        """The best `top_k` passages for `query`, best first (blocking: call it off the event loop)."""
        if mode == "lexical":
            hits = self.lexical.search(query, top_k)
        else:
            hits = self._dense_search(query, top_k)
        return [Passage(chunk, score) for chunk, score in hits]

    def _dense_search(self, query: str, top_k: int) -> list[tuple[Chunk, float]]:
        self.check_mode("dense")
        if not query.strip():
            return []
        if self._dense is None:
            from plexray.knowledge.dense import DenseIndex
            from plexray.knowledge.embeddings import EmbeddingsClient

            self._dense = DenseIndex(self.directory / storage.VECTORS_DIR)
            self._embeddings = EmbeddingsClient(self.config.embeddings)
        vector = self._embeddings.embed([query])[0]
        return self._dense.search(vector, top_k)


def open_bases(config: KnowledgeConfig, names: tp.Iterable[str]) -> dict[str, KnowledgeBase]:
    return {name: KnowledgeBase.open(config, name) for name in sorted(set(names))}
