"""A data run whose rejects pass data.max_reject_fraction fails, naming the most common cause.

The manifest's verdict is a plain function of what is on disk (no Ray needed here); the run that
fails end to end through `plexray data generate` is in test_pipeline.py.
"""

from __future__ import annotations

import pytest

from plexray.config import load_config
from plexray.data.manifest import write_manifest
from plexray.data.plan import PlanItem
from plexray.data.rejects import write_reject
from plexray.settings import PlexrayConfig


def _plan(count: int) -> list[PlanItem]:
    return [PlanItem(f"p.s.s1.{index:04d}", "p", "s", 1, index, "brief") for index in range(count)]


def _manifest(output_dir, plan, max_reject_fraction):
    settings = load_config(PlexrayConfig, None, [f"data.max_reject_fraction={max_reject_fraction}"])
    return write_manifest(output_dir, plan, settings.model_dump(mode="json"), {"error": None})


def test_every_item_rejected_is_a_failed_run_naming_the_dominant_cause(tmp_path):
    plan = _plan(5)
    for item in plan[:4]:
        write_reject(tmp_path, item.id, "p", "s", "synthesize",
                     "error: FileNotFoundError: [Errno 2] No such file or directory: 'espeak-ng'", "error", 2)
    write_reject(tmp_path, plan[4].id, "p", "s", "validate", "turn_count: 3 turns, expected 4-4", "invalid")
    manifest = _manifest(tmp_path, plan, 0.2)
    assert manifest["status"] == "too_many_rejects" and manifest["reconciled"]
    assert manifest["reject_fraction"] == 1.0
    assert manifest["dominant_reject_cause"] == {
        "cause": "synthesize error FileNotFoundError", "count": 4,
        "example": "error: FileNotFoundError: [Errno 2] No such file or directory: 'espeak-ng'"}


# The items not rejected have no shard here: within the limit, the run is "incomplete", not failed.
@pytest.mark.parametrize("rejected, max_fraction, status", [(1, 0.2, "incomplete"), (2, 0.2, "too_many_rejects"),
                                                             (5, 1.0, "complete"), (1, 0.0, "too_many_rejects")])
def test_the_limit_is_a_fraction_of_the_plan(tmp_path, rejected, max_fraction, status):
    plan = _plan(5)
    for item in plan[:rejected]:
        write_reject(tmp_path, item.id, "p", "s", "validate", "empty_turn: turn 2 has no text", "invalid")
    manifest = _manifest(tmp_path, plan, max_fraction)
    assert manifest["status"] == status
    assert manifest["dominant_reject_cause"]["cause"] == "validate empty_turn"
