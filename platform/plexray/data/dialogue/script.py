"""A dialogue script, what every backend returns, and the interface backends implement."""

from __future__ import annotations

import dataclasses
import typing as tp

from plexray.data.personas import Persona, Scenario

Speaker = tp.Literal["agent", "user"]
SPEAKERS: tuple[Speaker, ...] = ("agent", "user")


@dataclasses.dataclass(frozen=True)
class Turn:
    speaker: Speaker
    text: str


@dataclasses.dataclass(frozen=True)
class Dialogue:
    turns: tuple[Turn, ...]

    def to_json(self) -> list[dict]:
        return [{"speaker": turn.speaker, "text": turn.text} for turn in self.turns]

    @classmethod
    def from_json(cls, turns: list[dict]) -> "Dialogue":
        return cls(tuple(Turn(t["speaker"], t["text"]) for t in turns))


class DialogueBackend(tp.Protocol):
    """Writes one dialogue for a persona in a scenario; `seed` makes the choice reproducible.

    `passages`: what was retrieved for a grounded conversation; the agent's lines must use it.
    """

    def write(self, persona: Persona, scenario: Scenario, seed: int, min_turns: int, max_turns: int,
              first_speaker: Speaker, passages: tp.Sequence[str] = ()) -> Dialogue: ...
