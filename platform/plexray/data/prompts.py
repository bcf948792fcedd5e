"""System prompts in PersonaPlex's format (`<system> ... <system>`), at three levels of detail.

brief: who you are and the situation; standard: adds traits and the top speech patterns;
detailed: adds every style note, catchphrases and the pause behaviour. Training on a mix teaches
the model to follow prompts of any length. A grounded conversation's retrieved passages follow the
role text in the layout serving uses (plexray.knowledge.prompt.prompt_with_passages).
"""

from __future__ import annotations

import typing as tp

from plexray.data.personas import Persona, Scenario
from plexray.knowledge.prompt import prompt_with_passages
from plexray.model.prompt import wrap_system_prompt

DETAIL_LEVELS = ("brief", "standard", "detailed")


def _style(persona: Persona, limit: int | None) -> str:
    patterns = persona.speech_patterns
    parts = list(patterns.notes)
    if patterns.fillers:
        parts.append("filler words like " + ", ".join(f"'{f}'" for f in patterns.fillers))
    if patterns.technical_terms:
        parts.append("uses terms like " + ", ".join(patterns.technical_terms[:3]))
    if limit is not None:
        parts = parts[:limit]
    return "; ".join(parts)


def system_prompt(persona: Persona, scenario: Scenario, detail: str, passages: tp.Sequence[str] = ()) -> str:
    if detail not in DETAIL_LEVELS:
        raise ValueError(f"unknown prompt detail {detail!r}; expected one of {DETAIL_LEVELS}")
    sentences = [f"You are {persona.name}, a {persona.type} {persona.role}.", scenario.situation,
                 f"You are talking to the {scenario.counterpart}."]
    if detail in ("standard", "detailed"):
        sentences.insert(1, persona.traits)
        style = _style(persona, limit=None if detail == "detailed" else 3)
        if style:
            sentences.append(f"Speaking style: {style}.")
    if detail == "detailed":
        if persona.speech_patterns.phrases:
            sentences.append("You often say: " + " ".join(f"'{p}'" for p in persona.speech_patterns.phrases) + ".")
        low, high = persona.pause_ms
        sentences.append(f"You pause {low} to {high} milliseconds before answering.")
        sentences.append("Stay in character and on topic.")
    return wrap_system_prompt(prompt_with_passages(" ".join(sentences), passages))
