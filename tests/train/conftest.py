"""Fixtures of the training tests: small training sets in the contract schema, a base config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shards helper beside this file

from shards import conversation_row, write_shards  # noqa: E402


@pytest.fixture(scope="session")
def train_set(demo_bundle, tmp_path_factory) -> Path:
    """12 conversations (prompt phase + 24 frames each) in 3 shards."""
    rows = [conversation_row(demo_bundle, i, frames=24) for i in range(12)]
    return write_shards(tmp_path_factory.mktemp("train-set"), rows)
