"""Where a knowledge base lives and what its directory holds.

    <root>/<name>/manifest.json   documents (source -> content hash, chunks), skipped documents and why,
                                  chunking settings, the embedding model of the vectors (if any)
    <root>/<name>/passages.sqlite the passages and their FTS5 index (lexical retrieval)
    <root>/<name>/vectors.lance/  the passages' vectors in LanceDB (only in bases indexed with --dense)

`root` is a local directory or a pyarrow/fsspec URI (s3://, gs://, hdfs://, file://). SQLite needs
a local file, so a base under a remote root is read from a local copy (`local_copy`, refreshed when
the remote manifest changes) and written in a local staging directory, then uploaded (`staged`).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import shutil
import tempfile
import typing as tp
from pathlib import Path

from plexray.knowledge.errors import KnowledgeError

MANIFEST = "manifest.json"
PASSAGES_DB = "passages.sqlite"
VECTORS_DIR = "vectors.lance"
FORMAT_VERSION = 1


def is_uri(location: str) -> bool:
    return "://" in location


def base_location(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if is_uri(root) else str(Path(root).expanduser().resolve() / name)


def _filesystem(uri: str):
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError... for unusable URIs
        raise KnowledgeError(f"{uri}: cannot open this location ({type(exc).__name__}: {exc})") from None


def read_manifest_at(location: str) -> dict | None:
    """The manifest of the base at `location` (local or URI), or None when there is no base there."""
    if not is_uri(location):
        path = Path(location) / MANIFEST
        return json.loads(path.read_text()) if path.is_file() else None
    filesystem, path = _filesystem(location)
    try:
        with filesystem.open_input_stream(f"{path}/{MANIFEST}") as stream:
            return json.loads(stream.read())
    except FileNotFoundError:
        return None


def write_manifest(directory: Path, manifest: dict) -> None:
    manifest = {**manifest, "format_version": FORMAT_VERSION,
                "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    temporary = directory / f"{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    temporary.replace(directory / MANIFEST)  # readers never see half a manifest


def local_copy(location: str, cache_dir: str) -> Path:
    """A local directory holding the base: the location itself, or a cached copy of a remote base."""
    if not is_uri(location):
        return Path(location)
    import pyarrow.fs

    manifest = read_manifest_at(location)
    if manifest is None:
        raise KnowledgeError(f"{location}: no knowledge base here (no {MANIFEST})")
    version = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    target = Path(cache_dir).expanduser() / hashlib.sha256(location.encode()).hexdigest()[:16] / version
    if not (target / MANIFEST).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="download-", dir=target.parent))
        pyarrow.fs.copy_files(location, str(staging))
        with contextlib.suppress(OSError):  # another process finished the same copy first
            staging.rename(target)
        shutil.rmtree(staging, ignore_errors=True)
    return target


@contextlib.contextmanager
def staged(location: str, cache_dir: str) -> tp.Iterator[Path]:
    """A local directory to update the base in; a remote base is downloaded first and uploaded after."""
    if not is_uri(location):
        directory = Path(location)
        directory.mkdir(parents=True, exist_ok=True)
        yield directory
        return
    import pyarrow.fs

    with tempfile.TemporaryDirectory(prefix="plexray-knowledge-") as temporary:
        directory = Path(temporary) / "base"
        if read_manifest_at(location) is not None:
            shutil.copytree(local_copy(location, cache_dir), directory)
        else:
            directory.mkdir()
        yield directory
        filesystem, path = _filesystem(location)
        filesystem.create_dir(path, recursive=True)
        pyarrow.fs.copy_files(str(directory), location)
