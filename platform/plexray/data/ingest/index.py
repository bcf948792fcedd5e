"""The ingest index: one JSON object per line naming a recorded conversation's audio (and optionally prompts).

    {"stereo": "calls/0001.flac", "agent_channel": "left"}
    {"id": "call-0002", "agent": "calls/0002-agent.wav", "user": "calls/0002-user.mp3",
     "system_prompt": "You are ...", "voice_prompt": "voices/anna.wav", "persona": "anna", "scenario": "support"}

Either `stereo` (one file, both speakers) with `agent_channel` (left/right or 0/1: no default, since a
wrong guess would train the model to speak as the caller), or `agent` and `user` (two mono files that
start at the same moment). Paths are relative to the index file. Optional: `id` (default: the audio
file's name and a checksum of its path, stable across runs, which resume relies on), `system_prompt`
(default: data.ingest.default_system_prompt, or back-annotated by the LLM), `voice_prompt` (an audio
file of the agent's voice; default: picked from the agent channel), `persona` and `scenario` (labels
the manifest counts by; default `recorded` and the index file's name).

A malformed line fails the whole run before any work (the index is the plan); a file that is missing
or unreadable is one conversation's problem, found when it is read, and rejects only that conversation.
"""

from __future__ import annotations

import json
import typing as tp
import zlib
from pathlib import Path

import pydantic

from plexray.config import StrictModel
from plexray.data.errors import DataError
from plexray.data.plan import PlanItem

RECORDED_PERSONA = "recorded"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # ids name reject files: no path separators


class IndexEntry(StrictModel):
    """One line of the index, as written (paths still relative)."""

    id: str | None = pydantic.Field(None, pattern=ID_PATTERN)
    stereo: str | None = None
    agent_channel: tp.Literal["left", "right", 0, 1] | None = None
    agent: str | None = None
    user: str | None = None
    system_prompt: str | None = pydantic.Field(None, min_length=1)
    voice_prompt: str | None = None
    persona: str = pydantic.Field(RECORDED_PERSONA, min_length=1)
    scenario: str | None = pydantic.Field(None, min_length=1)

    @pydantic.model_validator(mode="after")
    def _one_layout(self) -> "IndexEntry":
        if self.stereo is not None:
            if self.agent is not None or self.user is not None:
                raise ValueError("give either 'stereo' (with 'agent_channel') or 'agent' and 'user', not both")
            if self.agent_channel is None:
                raise ValueError("'stereo' needs 'agent_channel': left or right (0 or 1)")
        elif self.agent is None or self.user is None:
            raise ValueError("give 'stereo' and 'agent_channel', or both 'agent' and 'user' (mono files)")
        elif self.agent_channel is not None:
            raise ValueError("'agent_channel' belongs to a 'stereo' file; 'agent' and 'user' are mono files")
        return self


def _resolved(index_file: Path, path: str | None) -> str | None:
    return None if path is None else str((index_file.parent / path).resolve())


def _default_id(entry: IndexEntry, paths: list[str]) -> str:
    stem = Path(entry.stereo or entry.agent).stem
    safe_stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in stem) or "recording"
    return f"ingest.{safe_stem}.{zlib.crc32('|'.join(paths).encode()):08x}"


def read_index(index_file: Path) -> tuple[list[PlanItem], list[dict]]:
    """The plan (one item per line) and the pipeline items: {id, persona_id, scenario_id, and the entry's
    fields with absolute paths}. Raises DataError naming the line of the first malformed entry."""
    if not index_file.is_file():
        raise DataError(f"{index_file}: index file not found")
    plan: list[PlanItem] = []
    items: list[dict] = []
    lines_of: dict[str, int] = {}
    for line_number, line in enumerate(index_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = IndexEntry.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{index_file}:{line_number}: not a JSON object ({exc})") from None
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, error['loc'])) or 'entry'}: {error['msg']}"
                                 for error in exc.errors())
            raise DataError(f"{index_file}:{line_number}: {problems}") from None
        paths = {key: _resolved(index_file, getattr(entry, key)) for key in ("stereo", "agent", "user", "voice_prompt")}
        item_id = entry.id or _default_id(entry, [path for path in paths.values() if path])
        if item_id in lines_of:
            raise DataError(f"{index_file}:{line_number}: id {item_id!r} is also on line {lines_of[item_id]}; "
                            "ids must be unique")
        lines_of[item_id] = line_number
        item = PlanItem(item_id, entry.persona, entry.scenario or index_file.stem, 0, line_number, "given")
        plan.append(item)
        channel = {"left": 0, "right": 1}.get(entry.agent_channel, entry.agent_channel)
        items.append({"id": item_id, "persona_id": item.persona_id, "scenario_id": item.scenario_id,
                      **paths, "agent_channel": channel, "system_prompt": entry.system_prompt})
    if not plan:
        raise DataError(f"{index_file}: the index lists no recordings")
    return plan, items
