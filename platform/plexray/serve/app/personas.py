"""Named personas from config, plus what a client may override, -> the engine's SessionSettings; and the
deploy-time check that every voice the personas name is one of the checkpoint's."""

from __future__ import annotations

import typing as tp

import pydantic

from plexray.config import describe_validation_error
from plexray.errors import ConfigError
from plexray.model.config import ModelConfig
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


def check_voices(personas: tp.Mapping[str, PersonaConfig], model: ModelConfig) -> None:
    """ConfigError naming each persona whose voice the checkpoint lacks, and the voices it has.

    Called when the applications are built, as the knowledge bases are checked: such a persona would
    deploy, show as enabled and refuse every call. Reads only the checkpoint's voices, never its weights.
    """
    from plexray.model.reference import resolve_voices
    from plexray.model.voices import discover_voices

    named = {name: persona.voice for name, persona in sorted(personas.items()) if persona.voice is not None}
    if not named:
        return
    voices = sorted(discover_voices(resolve_voices(model.checkpoint, model.cache_dir)))
    problems = [f"serve.personas.{name}.voice: {voice!r} is not a voice of checkpoint {model.checkpoint!r}"
                for name, voice in named.items() if voice not in voices]
    if problems:
        raise ConfigError(f"{'; '.join(problems)}; its voices: {', '.join(voices) or 'none'}")
