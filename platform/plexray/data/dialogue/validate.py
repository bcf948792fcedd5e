"""Dialogue validation (persona-data-guide step 4): a failing dialogue is rejected with its reason."""

from __future__ import annotations

import typing as tp

from plexray.data.dialogue.script import SPEAKERS, Dialogue
from plexray.knowledge.facts import fact_sentences, uses_fact


def dialogue_problem(dialogue: Dialogue, min_turns: int, max_turns: int, first_speaker: str) -> str | None:
    """The reason this dialogue is unusable, or None. Reasons start with a stable tag for counting."""
    turns = dialogue.turns
    if not min_turns <= len(turns) <= max_turns:
        return f"turn_count: {len(turns)} turns, expected {min_turns}-{max_turns}"
    for index, turn in enumerate(turns):
        if turn.speaker not in SPEAKERS:
            return f"unknown_speaker: turn {index} speaker {turn.speaker!r}"
        if not turn.text.strip():
            return f"empty_turn: turn {index} has no text"
    if turns[0].speaker != first_speaker:
        return f"first_speaker: {turns[0].speaker} speaks first, expected {first_speaker}"
    for index in range(1, len(turns)):
        if turns[index].speaker == turns[index - 1].speaker:
            return f"not_alternating: turns {index - 1} and {index} are both {turns[index].speaker}"
    return None


def grounding_problem(dialogue: Dialogue, passages: tp.Sequence[str] | None) -> str | None:
    """For a grounded conversation (passages not None): the reason when no agent turn uses a retrieved
    fact, else None."""
    if passages is None:
        return None
    if not passages:
        return "ungrounded: the query retrieved no passage that fits the token budget"
    facts = fact_sentences(passages)
    if any(turn.speaker == "agent" and uses_fact(turn.text, facts) for turn in dialogue.turns):
        return None
    return f"ungrounded: no agent turn uses a fact of the {len(passages)} retrieved passage(s)"


def reason_tag(reason: str) -> str:
    return reason.split(":", 1)[0]


def per_persona_problems(counts: dict[str, int], expected: int) -> list[str]:
    """Personas with fewer written conversations than planned (the guide wants several per persona)."""
    return [f"{persona}: {count} conversations, planned {expected}"
            for persona, count in sorted(counts.items()) if count < expected]
