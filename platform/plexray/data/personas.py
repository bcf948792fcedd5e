"""Personas and scenarios: the characters the model learns to play and the situations they meet.

Both live in YAML files (`personas: [...]`, `scenarios: [...]`); the coffee-shop library ships
with the package and users bring their own domains as files of the same shape. The persona is the
*agent* (the voice the model speaks with and the role its system prompt describes); the
scenario's counterpart (e.g. a barista) speaks on the user channel.
"""

from __future__ import annotations

import dataclasses
import typing as tp
from importlib import resources
from pathlib import Path

import pydantic

from plexray.config import StrictModel, describe_validation_error, read_yaml
from plexray.data.errors import LibraryError
from plexray.knowledge.config import KnowledgeSettings


class Voice(StrictModel):
    """An espeak-ng voice: variant (m1-m7, f1-f5, ...), pitch 0-99, rate in words per minute."""

    variant: str = pydantic.Field("m3", pattern=r"^[a-zA-Z0-9_-]+$")
    pitch: int = pydantic.Field(50, ge=0, le=99)
    rate: int = pydantic.Field(165, ge=80, le=450)


class SpeechPatterns(StrictModel):
    """How a persona talks; the embedded dialogue generator writes these into the persona's lines."""

    fillers: list[str] = pydantic.Field(default_factory=list, description="e.g. um, uh, like")
    filler_rate: float = pydantic.Field(0.0, ge=0, le=1, description="chance a line starts with a filler")
    phrases: list[str] = pydantic.Field(default_factory=list, description="catchphrases, e.g. 'Just fix it!'")
    phrase_rate: float = pydantic.Field(0.0, ge=0, le=1)
    questions: list[str] = pydantic.Field(default_factory=list, description="clarifying questions it asks")
    question_rate: float = pydantic.Field(0.0, ge=0, le=1)
    technical_terms: list[str] = pydantic.Field(default_factory=list, description="jargon it drops in")
    technical_rate: float = pydantic.Field(0.0, ge=0, le=1)
    interrupts: float = pydantic.Field(0.0, ge=0, le=1, description="chance a turn starts before the other ends")
    notes: list[str] = pydantic.Field(default_factory=list, description="free-text style notes for prompts")


class Persona(StrictModel):
    id: str = pydantic.Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    name: str = pydantic.Field(min_length=1)
    type: str = pydantic.Field(min_length=1, description="e.g. angry, nervous, friendly")
    role: str = pydantic.Field("customer", min_length=1, description="what the persona is: 'You are NAME, a TYPE ROLE.'")
    traits: str = pydantic.Field(min_length=1)
    speech_patterns: SpeechPatterns = SpeechPatterns()
    pause_ms: tuple[int, int] = pydantic.Field(
        description="[low, high] gap before this persona answers: 80% of its answers start in it (data/timing.py)")
    voice: Voice = Voice()
    knowledge: KnowledgeSettings | None = pydantic.Field(
        None, description="a knowledge base whose passages join this persona's prompts and dialogues")

    @pydantic.field_validator("pause_ms")
    @classmethod
    def _pause_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if low < 0 or high < low:
            raise ValueError(f"expected 0 <= min <= max, got [{low}, {high}]")
        return value


class Scenario(StrictModel):
    """A situation, with the content the embedded generator draws lines from.

    Line templates may use `{item}` (one of `items`), `{counterpart}` and, in a grounded conversation,
    `{fact}` (a sentence of the retrieved passages).
    """

    id: str = pydantic.Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    name: str = pydantic.Field(min_length=1)
    situation: str = pydantic.Field(min_length=1, description="what is going on, for the system prompt")
    counterpart: str = pydantic.Field("barista", min_length=1, description="who speaks on the user channel")
    counterpart_voice: Voice = Voice(variant="f2", pitch=55, rate=170)
    items: list[str] = pydantic.Field(min_length=1)
    agent_lines: list[str] = pydantic.Field(min_length=2, description="what the persona says")
    user_lines: list[str] = pydantic.Field(min_length=2, description="what the counterpart says")
    agent_closings: list[str] = pydantic.Field(min_length=1)
    user_closings: list[str] = pydantic.Field(min_length=1)
    pause_ms: tuple[int, int] | None = pydantic.Field(
        None, description="[low, high] gap before the counterpart answers (80% of its answers start in it); "
                          "none: natural timing, data.speech.timing (data/timing.py)")
    knowledge: KnowledgeSettings | None = pydantic.Field(
        None, description="a knowledge base for this situation (takes precedence over the persona's); agent "
                          "line templates may use {fact}, a sentence of the retrieved passages")


class PersonaFile(StrictModel):
    personas: list[Persona] = pydantic.Field(min_length=1)


class ScenarioFile(StrictModel):
    scenarios: list[Scenario] = pydantic.Field(min_length=1)


@dataclasses.dataclass(frozen=True)
class Library:
    personas: dict[str, Persona]
    scenarios: dict[str, Scenario]


FileT = tp.TypeVar("FileT", PersonaFile, ScenarioFile)


def builtin_files(kind: tp.Literal["personas", "scenarios"]) -> list[Path]:
    folder = resources.files("plexray.data") / "library" / kind
    return sorted(Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith((".yaml", ".yml")))


def read_file(path: Path, model: type[FileT]) -> FileT:
    raw = read_yaml(path, LibraryError)
    try:
        return model.model_validate(raw if raw is not None else {})
    except pydantic.ValidationError as exc:
        raise LibraryError(describe_validation_error(str(path), exc)) from None


def _collect(files: list[Path], model, attribute: str, kind: str) -> dict:
    entries: dict = {}
    origin: dict[str, Path] = {}
    for path in files:
        for entry in getattr(read_file(path, model), attribute):
            if entry.id in entries:
                raise LibraryError(f"{path}: {kind} id {entry.id!r} is already defined in {origin[entry.id]}")
            entries[entry.id] = entry
            origin[entry.id] = path
    return entries


def _select(entries: dict, wanted: list[str], kind: str) -> dict:
    if not wanted:
        return entries
    unknown = [name for name in wanted if name not in entries]
    if unknown:
        raise LibraryError(f"data.library.{kind}: unknown id(s) {unknown}; known: {sorted(entries)}")
    return {name: entries[name] for name in wanted}


def load_library(persona_files: tp.Sequence[str | Path] = (), scenario_files: tp.Sequence[str | Path] = (),
                 personas: tp.Sequence[str] = (), scenarios: tp.Sequence[str] = ()) -> Library:
    """Read persona and scenario files (the built-in library when none are given) and select entries."""
    persona_paths = [Path(p) for p in persona_files] or builtin_files("personas")
    scenario_paths = [Path(p) for p in scenario_files] or builtin_files("scenarios")
    all_personas = _collect(persona_paths, PersonaFile, "personas", "persona")
    all_scenarios = _collect(scenario_paths, ScenarioFile, "scenarios", "scenario")
    return Library(_select(all_personas, list(personas), "personas"),
                   _select(all_scenarios, list(scenarios), "scenarios"))
