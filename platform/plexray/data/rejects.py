"""Rejected and quarantined conversations: one JSON file per id, gathered into a table at the end.

Workers write these directly (the output directory is on a filesystem every node sees, as the
Parquet shards are), so a reject is recorded even if the run dies afterwards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REJECTS_DIR = "rejects"


def write_reject(output_dir: Path, item_id: str, persona_id: str, scenario_id: str, stage: str,
                 reason: str, kind: str, attempts: int = 1) -> None:
    """kind: `invalid` (the content failed validation) or `error` (it crashed max_attempts times)."""
    folder = output_dir / REJECTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    record = {"id": item_id, "persona_id": persona_id, "scenario_id": scenario_id, "stage": stage,
              "kind": kind, "reason": reason, "attempts": attempts}
    temporary = folder / f".{item_id}.json.tmp"
    temporary.write_text(json.dumps(record))
    os.replace(temporary, folder / f"{item_id}.json")  # atomic: never a half-written record


def read_rejects(output_dir: Path) -> dict[str, dict]:
    folder = output_dir / REJECTS_DIR
    if not folder.is_dir():
        return {}
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def clear_reject(output_dir: Path, item_id: str) -> None:
    (output_dir / REJECTS_DIR / f"{item_id}.json").unlink(missing_ok=True)
