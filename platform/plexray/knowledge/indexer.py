"""`plexray knowledge index`: documents -> passages -> the base's indexes, incremental by content hash.

The documents given are the base: a document whose bytes hash as in the manifest is not read again,
a changed or new one is re-chunked (and re-embedded), one no longer given is removed, and one that
cannot be read is skipped and listed with the reason (its old passages go too: the base must not
answer from a document it can no longer vouch for). Reading, hashing, chunking and embedding run
in Ray Data tasks, `workers` at a time; the driver then applies the changes to SQLite and LanceDB,
which are single-writer stores.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing as tp
from pathlib import Path

import numpy as np

from plexray.knowledge import dense, lexical, storage
from plexray.knowledge.chunking import Chunk, chunk_text, document_title
from plexray.knowledge.config import KnowledgeConfig
from plexray.knowledge.documents import UNSUPPORTED_TYPE, UnreadableDocument, content_hash, kind_of, parse_document
from plexray.knowledge.errors import KnowledgeError

logger = logging.getLogger(__name__)

NO_SUCH_PATH = "no such file or directory"


def expand_sources(paths: tp.Sequence[str]) -> tuple[list[str], list[dict]]:
    """(documents to read, skipped) for the paths given: directories are walked for supported files; a path
    that does not exist, or a file named explicitly with another type, is skipped with the reason; local
    paths become absolute."""
    documents, skipped = [], []
    for given in paths:
        if storage.is_uri(given):
            found = _expand_uri(given)
            if found is None:
                skipped.append({"source": given, "reason": NO_SUCH_PATH})
            else:
                documents.extend(found)
            continue
        path = Path(given).expanduser().resolve()
        if not path.exists():  # checked first: a mistyped path is not a question of its file type
            skipped.append({"source": str(path), "reason": NO_SUCH_PATH})
        elif path.is_dir():
            documents.extend(str(p) for p in sorted(path.rglob("*")) if p.is_file() and kind_of(p.name))
        elif kind_of(path.name) is None:
            skipped.append({"source": str(path), "reason": UNSUPPORTED_TYPE})
        else:
            documents.append(str(path))  # one that vanishes before it is read is reported by the reader
    return list(dict.fromkeys(documents)), skipped


def _expand_uri(uri: str) -> list[str] | None:
    """The documents at a URI (a file, or a directory's supported files); None when nothing is there."""
    import pyarrow.fs

    filesystem, path = storage._filesystem(uri)
    info = filesystem.get_file_info(path)
    if info.type == pyarrow.fs.FileType.NotFound:
        return None
    if info.type != pyarrow.fs.FileType.Directory:
        return [uri]
    scheme = uri.split("://", 1)[0]
    entries = filesystem.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
    return sorted(f"{scheme}://{entry.path}" for entry in entries
                  if entry.type == pyarrow.fs.FileType.File and kind_of(entry.path))


def read_bytes(source: str) -> bytes:
    if storage.is_uri(source):
        filesystem, path = storage._filesystem(source)
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    return Path(source).read_bytes()


def process_document(row: dict, known_hashes: dict[str, str], config: KnowledgeConfig, dense_enabled: bool) -> dict:
    """One document -> its status ('unchanged', 'chunked' or 'skipped'), hash, passages (JSON) and vectors.

    The plain function behind the Ray Data stage; runs anywhere, raises nothing for a bad document.
    """
    source = row["source"]
    result = {"source": source, "status": "skipped", "hash": "", "reason": "", "kind": "", "title": "",
              "chunks": "[]", "vectors": b"", "dim": 0}
    try:
        data = read_bytes(source)
    except OSError as exc:
        return {**result, "reason": f"cannot read: {type(exc).__name__}: {exc.strerror or exc}"}
    digest = content_hash(data)
    if known_hashes.get(source) == digest:
        return {**result, "status": "unchanged", "hash": digest}
    try:
        document = parse_document(source, data)
    except UnreadableDocument as exc:
        return {**result, "reason": str(exc), "hash": digest}
    chunks = chunk_text(source, document.text, config.chunking)
    if not chunks:
        return {**result, "reason": "no text in it", "hash": digest}
    result = {**result, "status": "chunked", "hash": digest, "kind": document.kind,
              "title": document_title(document.text),
              "chunks": json.dumps([dataclasses.asdict(chunk) for chunk in chunks])}
    if dense_enabled:
        from plexray.knowledge.embeddings import EmbeddingsClient

        vectors = EmbeddingsClient(config.embeddings).embed([chunk.text for chunk in chunks])
        # bytes: one Arrow type for every row (Ray Data need not reconcile tensor shapes across blocks)
        result.update(vectors=vectors.astype(np.float32).tobytes(), dim=int(vectors.shape[1]))
    return result


def process_with_ray(sources: list[str], known_hashes: dict[str, str], config: KnowledgeConfig,
                     dense_enabled: bool, workers: int) -> list[dict]:
    """`process_document` over every source in Ray Data tasks, at most `workers` at a time."""
    import ray

    if not ray.is_initialized():
        ray.init()
    dataset = ray.data.from_items([{"source": source} for source in sources],
                                  override_num_blocks=max(1, min(len(sources), workers * 4)))
    dataset = dataset.map(process_document, fn_kwargs={"known_hashes": known_hashes, "config": config,
                                                       "dense_enabled": dense_enabled},
                          compute=ray.data.TaskPoolStrategy(size=workers), num_cpus=1)
    return dataset.take_all()


def index_documents(paths: tp.Sequence[str], name: str, config: KnowledgeConfig, dense_enabled: bool = False,
                    workers: int | None = None,
                    process: tp.Callable[..., list[dict]] = process_with_ray) -> dict:
    """Create or update the base `name` under config.root from `paths`; returns the run's summary.

    `process` runs `process_document` over the sources (Ray Data by default; tests may pass a plain loop).
    """
    sources, skipped = expand_sources(paths)
    location = storage.base_location(config.root, name)
    with storage.staged(location, config.cache_dir) as directory:
        previous = storage.read_manifest_at(str(directory)) or {}
        old_documents: dict[str, dict] = previous.get("documents", {})
        dense_model = (previous.get("dense") or {}).get("model")
        if dense_enabled and dense_model not in (None, config.embeddings.model):
            raise KnowledgeError(f"knowledge base {name!r} holds vectors of {dense_model!r}; knowledge.embeddings."
                                 f"model is {config.embeddings.model!r}: index it under another name")
        if dense_model is not None and not dense_enabled:
            raise KnowledgeError(f"knowledge base {name!r} holds vectors ({dense_model}); index it with --dense "
                                 f"so they stay in step with its passages")
        # Other chunking settings make other passages: every document is then read again.
        # A base getting vectors for the first time needs them for every passage, too.
        same_passages = (previous.get("chunking") == config.chunking.model_dump()
                         and not (dense_enabled and dense_model is None))
        known = {source: entry["hash"] for source, entry in old_documents.items()} if same_passages else {}
        results = process(sources, known, config, dense_enabled, workers or config.index_workers) if sources else []
        documents: dict[str, dict] = {}
        unchanged: set[str] = set()
        changed_chunks: list[Chunk] = []
        changed_vectors: list[np.ndarray] = []
        for result in sorted(results, key=lambda r: r["source"]):
            source = result["source"]
            if result["status"] == "unchanged":
                documents[source] = old_documents[source]
                unchanged.add(source)
            elif result["status"] == "chunked":
                chunks = [Chunk(**chunk) for chunk in json.loads(result["chunks"])]
                documents[source] = {"hash": result["hash"], "kind": result["kind"], "title": result["title"],
                                     "chunks": len(chunks)}
                changed_chunks.extend(chunks)
                if dense_enabled:
                    changed_vectors.append(np.frombuffer(result["vectors"], np.float32).reshape(len(chunks),
                                                                                             result["dim"]))
            else:
                skipped.append({"source": source, "reason": result["reason"]})
        # Passages of every document not kept as it was are deleted: changed, removed and now unreadable ones.
        stale = sorted(set(old_documents) - unchanged)
        connection = lexical.connect(directory / storage.PASSAGES_DB)
        try:
            lexical.replace_documents(connection, stale, changed_chunks)
            passages = lexical.count_passages(connection)
        finally:
            connection.close()
        dense_info = None
        if dense_enabled:
            vectors = np.concatenate(changed_vectors) if changed_vectors else np.zeros((0, 0), np.float32)
            dense.replace_documents(directory / storage.VECTORS_DIR, stale, changed_chunks, vectors)
            dimensions = {int(v.shape[1]) for v in changed_vectors} | {(previous.get("dense") or {}).get("dim")}
            dimensions.discard(None)
            if len(dimensions) > 1:
                raise KnowledgeError(f"the embeddings endpoint answered vectors of sizes {sorted(dimensions)}")
            dense_info = {"model": config.embeddings.model, "dim": dimensions.pop() if dimensions else None}
        counts = {"added": sorted(set(documents) - set(old_documents)),
                  "updated": sorted(set(documents) & set(old_documents) - unchanged),
                  "removed": sorted(set(old_documents) - set(documents))}
        manifest = {"name": name, "documents": documents, "skipped": skipped, "passages": passages,
                    "chunking": config.chunking.model_dump(), "dense": dense_info}
        storage.write_manifest(directory, manifest)
    summary = {"name": name, "location": location, "documents": len(documents), "passages": passages,
               "unchanged": len(unchanged),
               **{key: len(value) for key, value in counts.items()}, "skipped": skipped,
               "dense": dense_info}
    logger.info("knowledge base %s: %s", name, json.dumps(summary))
    return summary
