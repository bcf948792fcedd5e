"""NVIDIA's web client's query strings -> session settings, without a server.

The strings are copied from what its `buildURL` (client/src/pages/Conversation/Conversation.tsx)
produces: the defaults of `useModelParams.ts`, and the ends of every range its setters accept
(temperatures 0.2-1.2, top-k 10-500, pad_mult -4..4, repetition penalty 1-2, context 0-200); seeds
are Math.round(1e6 * Math.random()), or -1 ("the server chooses") from Kyutai's client.
"""

from __future__ import annotations

import urllib.parse

import pytest

from plexray.serve.app import binary_protocol as binary
from plexray.serve.app.errors import AdmissionDenied
from plexray.serve.app.personas import session_settings
from plexray.serve.config import ServeConfig
from plexray.serve.engine.config import SEED_LIMIT, EngineConfig

DEFAULTS = ("text_temperature=0.7&text_topk=25&audio_temperature=0.8&audio_topk=250&pad_mult=0&text_seed=482913"
            "&audio_seed=77&repetition_penalty_context=64&repetition_penalty=1&text_prompt=You+are+a+wise+and+"
            "friendly+teacher.+Answer+questions+or+provide+advice+in+a+clear+and+engaging+way.&voice_prompt=NATF0.pt")
LOWEST = ("text_temperature=0.2&text_topk=10&audio_temperature=0.2&audio_topk=10&pad_mult=-4&text_seed=-1"
          "&audio_seed=-1&repetition_penalty_context=0&repetition_penalty=1&text_prompt=&voice_prompt=VARM4.pt")
HIGHEST = ("text_temperature=1.2&text_topk=500&audio_temperature=1.2&audio_topk=500&pad_mult=4&text_seed=1000000"
           "&audio_seed=1000000&repetition_penalty_context=200&repetition_penalty=2&text_prompt=You+enjoy+having+a+"
           "good+conversation.&voice_prompt=NATM3.pt")


def settings_of(query: str):
    """What /api/chat makes of a query string, with the default persona (which allows every override)."""
    config = ServeConfig()
    overrides = binary.session_overrides(dict(urllib.parse.parse_qsl(query, keep_blank_values=True)))
    return session_settings(config.personas[config.default_persona], overrides)


def test_the_clients_defaults_are_taken_as_sent():
    settings = settings_of(DEFAULTS)
    assert (settings.text_temperature, settings.text_topk, settings.audio_temperature, settings.audio_topk) == \
        (0.7, 25, 0.8, 250)
    assert (settings.pad_mult, settings.text_seed, settings.audio_seed) == (0.0, 482913, 77)
    assert (settings.repetition_penalty, settings.repetition_penalty_context) == (1.0, 64)
    assert settings.voice == "NATF0" and settings.text_prompt.startswith("You are a wise and friendly teacher.")


def test_both_ends_of_every_control_are_accepted():
    lowest, highest = settings_of(LOWEST), settings_of(HIGHEST)
    assert (lowest.pad_mult, lowest.repetition_penalty_context, lowest.text_topk) == (-4.0, 0, 10)
    assert (highest.pad_mult, highest.repetition_penalty_context, highest.audio_topk) == (4.0, 200, 500)
    assert highest.repetition_penalty_context <= EngineConfig().repetition_context_max  # the engine takes it too


def test_seed_minus_one_is_a_seed_the_server_draws_and_records():
    drawn = [settings_of(LOWEST) for _ in range(3)]
    seeds = {seed for settings in drawn for seed in (settings.text_seed, settings.audio_seed)}
    assert all(0 <= seed < SEED_LIMIT for seed in seeds)
    assert len(seeds) > 1  # drawn per session and per stream, not one fixed stand-in


@pytest.mark.parametrize("parameter, value", [
    ("text_temperature", "101"), ("text_temperature", "nan"), ("audio_temperature", "inf"),
    ("audio_temperature", "-0.1"), ("text_topk", "0"), ("text_topk", "32001"), ("audio_topk", "2049"),
    ("pad_mult", "101"), ("pad_mult", "-1e39"), ("repetition_penalty", "1e39"), ("repetition_penalty", "0.5"),
    ("repetition_penalty_context", "3001"), ("repetition_penalty_context", "-1"), ("text_seed", "-2"),
    ("audio_seed", str(2**31)), ("text_topk", "25.5"),
    # finite, but past float32 (they once raised inside the engine's tick) or int64
    ("text_temperature", "1e308"), ("audio_temperature", "1e308"), ("repetition_penalty", "1e308"),
    ("text_topk", str(2**63)), ("audio_topk", str(2**64)),
])
def test_values_the_engine_cannot_represent_are_refused_naming_the_setting(parameter, value):
    query = urllib.parse.urlencode({**dict(urllib.parse.parse_qsl(DEFAULTS)), parameter: value})
    with pytest.raises(AdmissionDenied, match=f"invalid session settings: .*{parameter}") as denied:
        settings_of(query)
    assert denied.value.close_code == 1008
