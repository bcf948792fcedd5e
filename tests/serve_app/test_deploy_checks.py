"""A persona naming a voice the checkpoint lacks fails the deploy, naming persona, voice and the voices
there are (issue 25: `voice: NATF2` deployed, showed "enabled" and refused every call)."""

from __future__ import annotations

import pytest

from plexray.cli import main
from plexray.errors import ConfigError
from plexray.serve.app import builders

PERSONAS = ("serve.personas={assistant: {voice: NATF0, text_prompt: 'Hi.'}, "
            "barista: {voice: NATF2, text_prompt: 'You sell coffee.'}}")


def test_a_voice_the_checkpoint_lacks_fails_the_deploy_naming_it(demo_checkpoint):
    with pytest.raises(ConfigError) as error:
        builders.sessions_app({"set": [f"model.checkpoint={demo_checkpoint}", PERSONAS]})
    message = str(error.value)
    assert "serve.personas.barista.voice: 'NATF2' is not a voice of checkpoint" in message
    assert "assistant" not in message and "its voices: NATF0, NATM0, " in message


def test_personas_with_the_checkpoints_voices_deploy(demo_checkpoint):
    good = PERSONAS.replace("NATF2", "NATM0")
    assert builders.sessions_app({"set": [f"model.checkpoint={demo_checkpoint}", good]}) is not None


def test_serve_run_says_so_in_one_line_before_any_cluster_starts(demo_checkpoint, capsys):
    import ray

    started_before = ray.is_initialized()
    code = main(["serve", "run", "--set", f"model.checkpoint={demo_checkpoint}", "--set", PERSONAS])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "'NATF2'" in err, err
    assert ray.is_initialized() == started_before
