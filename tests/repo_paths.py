"""Paths the tests share (a plain module: `conftest` names collide across test folders)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference"
