"""Personas, scenarios and system prompts."""

import collections

import pytest

from plexray.data.errors import LibraryError
from plexray.data.personas import load_library
from plexray.data.prompts import DETAIL_LEVELS, system_prompt


def test_builtin_library_has_the_promised_mix():
    library = load_library()
    assert len(library.scenarios) >= 10
    types = collections.Counter(persona.type for persona in library.personas.values())
    assert types == {"angry": 5, "nervous": 5, "friendly": 5, "indecisive": 3, "enthusiast": 2}
    voices = {(p.voice.variant, p.voice.pitch, p.voice.rate) for p in library.personas.values()}
    assert len(voices) == len(library.personas), "every persona needs its own voice"


@pytest.mark.parametrize("bad_field, expected", [
    ("    pause_ms: [900, 100]\n", "personas.0.pause_ms"),
    ("    pause_ms: [100, 200]\n    voice: {variant: m3, pitch: 150}\n", "personas.0.voice.pitch"),
    ("    pause_ms: [100, 200]\n    speech_pattern: {}\n", "personas.0.speech_pattern: unknown key"),
])
def test_bad_persona_field_names_file_and_key(tmp_path, bad_field, expected):
    path = tmp_path / "mine.yaml"
    path.write_text("personas:\n  - id: bob\n    name: Bob\n    type: angry\n    traits: Grumpy.\n" + bad_field)
    with pytest.raises(LibraryError) as error:
        load_library([path])
    assert str(path) in str(error.value) and expected in str(error.value)


def test_duplicate_ids_and_unknown_selection_are_errors(tmp_path):
    entry = "  - id: bob\n    name: Bob\n    type: angry\n    traits: Grumpy.\n    pause_ms: [100, 200]\n"
    (tmp_path / "a.yaml").write_text("personas:\n" + entry)
    (tmp_path / "b.yaml").write_text("personas:\n" + entry)
    with pytest.raises(LibraryError, match="'bob' is already defined"):
        load_library([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    with pytest.raises(LibraryError, match="unknown id"):
        load_library(personas=["nobody"])


def test_system_prompts_are_wrapped_and_grow_with_detail():
    library = load_library()
    persona, scenario = library.personas["nervous-nancy"], library.scenarios["first-time-order"]
    prompts = [system_prompt(persona, scenario, level) for level in DETAIL_LEVELS]
    for prompt in prompts:
        assert prompt.startswith("<system> You are Nervous Nancy") and prompt.endswith(" <system>")
        assert scenario.situation in prompt
    assert len(prompts[0]) < len(prompts[1]) < len(prompts[2])
    assert "'um'" in prompts[2] and "480 to 1200 milliseconds" in prompts[2]


def test_cli_reports_a_bad_persona_file_in_one_line(tmp_path, capsys):
    from plexray.cli import main

    path = tmp_path / "mine.yaml"
    path.write_text("personas:\n  - id: bob\n    name: Bob\n    type: angry\n    traits: x\n    pause_ms: [500, 100]\n")
    assert main(["data", "generate", "--set", f"data.library.persona_files=[{path}]",
                 "--set", f"data.output_dir={tmp_path / 'out'}"]) == 2
    error = capsys.readouterr().err
    assert f"{path}: personas.0.pause_ms" in error and "Traceback" not in error
    assert not (tmp_path / "out").exists(), "a bad persona file fails before any work"


def test_a_persona_file_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("personas:\n  - id: jose\n    name: José\n".encode("latin-1"))
    with pytest.raises(LibraryError, match=rf"^{path}: not UTF-8 text"):
        load_library([path])
