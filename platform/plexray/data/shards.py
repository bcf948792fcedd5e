"""The shard directory: which ids are already written, and quarantine of unreadable shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

SHARDS_DIR = "shards"
QUARANTINE_DIR = "quarantine"
SHARD_PATTERN = "part-*.parquet"


def shard_files(output_dir: Path) -> list[Path]:
    return sorted((output_dir / SHARDS_DIR).glob(SHARD_PATTERN))


def quarantine_file(output_dir: Path, path: Path, reason: str) -> Path:
    """Move an unusable file aside (never delete: a person may want to look at it) and record why."""
    folder = output_dir / QUARANTINE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    shutil.move(str(path), target)
    with (folder / "files.jsonl").open("a") as log:
        log.write(json.dumps({"file": str(target), "original": str(path), "reason": reason}) + "\n")
    return target


def written_ids(output_dir: Path) -> dict[str, str]:
    """id -> shard file name, for every readable shard; unreadable shards go to quarantine.

    A run killed while writing can leave a truncated file: its rows count as not written, so a
    resumed run writes them again.
    """
    ids: dict[str, str] = {}
    for path in shard_files(output_dir):
        try:
            column = pq.read_table(path, columns=["id"]).column("id").to_pylist()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            quarantine_file(output_dir, path, f"unreadable shard: {type(exc).__name__}: {exc}")
            continue
        for item_id in column:
            ids.setdefault(item_id, path.name)
    return ids
