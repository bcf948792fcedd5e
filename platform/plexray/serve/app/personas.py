"""Named personas from config, plus what a client may override, -> the engine's SessionSettings."""

from __future__ import annotations

import typing as tp

import pydantic

from plexray.config import describe_validation_error
from plexray.serve.app.errors import AdmissionDenied, CloseCode
from plexray.serve.config import PersonaConfig
from plexray.serve.engine import SessionSettings


def bad_request(message: str) -> AdmissionDenied:
    return AdmissionDenied("bad_request", message, CloseCode.POLICY)


def resolve_persona(personas: tp.Mapping[str, PersonaConfig], name: str) -> PersonaConfig:
    if name not in personas:
        raise bad_request(f"unknown persona {name!r}; available: {sorted(personas)}")
    return personas[name]


def session_settings(persona: PersonaConfig, overrides: tp.Mapping[str, tp.Any]) -> SessionSettings:
    """The persona's voice, prompt and sampling defaults, then the client's allowed overrides.

    An override the persona does not allow is refused (not silently ignored), as is a bad value.
    """
    refused = sorted(set(overrides) - set(persona.allow_overrides))
    if refused:
        raise bad_request(f"this persona does not allow overriding {refused}; allowed: {persona.allow_overrides}")
    values = {"voice": persona.voice, "text_prompt": persona.text_prompt, **persona.sampling, **overrides}
    try:
        return SessionSettings.model_validate(values)
    except pydantic.ValidationError as exc:
        problems = describe_validation_error("session settings", exc).split("\n", 1)[1].strip()
        raise bad_request(f"invalid session settings: {problems}") from None
