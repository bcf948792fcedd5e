"""The behavioural test set: reproducible from its seed, with the timing each task promises, refused when incomplete."""

from __future__ import annotations

import json

import numpy as np
import pytest

from plexray.evaluation import config as evaluation_config
from plexray.evaluation import testset  # its classes are named Test...: not imported by name, or pytest collects them
from plexray.evaluation.testset import ROLE_QUESTION_TYPES, build_test_set, load_test_set, read_user_audio
from plexray.model.prompt import SAMPLE_RATE

COUNTS = {"pause_handling": 2, "turn_taking": 1, "interruption": 2, "user_backchannel": 1, "backchannel": 1, "role": 6}
CONFIG = evaluation_config.TestSetConfig(conversations=COUNTS, trailing_silence_s=2.5)


@pytest.fixture(scope="module")
def built_set(tmp_path_factory):
    directory = tmp_path_factory.mktemp("test-set") / "set"
    manifest = build_test_set(CONFIG, directory, seed=7)
    return directory, manifest, load_test_set(directory)


def _loud(track: np.ndarray, start_s: float, end_s: float) -> float:
    return float(np.abs(track[round(start_s * SAMPLE_RATE):round(end_s * SAMPLE_RATE)]).max(initial=0.0))


def test_same_seed_same_set_other_seed_other_set(built_set, tmp_path):
    directory, manifest, conversations = built_set
    assert manifest["counts"] == COUNTS and len(conversations) == sum(COUNTS.values())
    build_test_set(CONFIG, tmp_path / "again", seed=7)
    build_test_set(CONFIG, tmp_path / "other", seed=8)
    assert load_test_set(tmp_path / "again") == conversations
    for conversation in conversations:
        assert (tmp_path / "again" / conversation["user_audio"]).read_bytes() == \
            (directory / conversation["user_audio"]).read_bytes()
    assert load_test_set(tmp_path / "other") != conversations


def test_every_task_has_its_promised_timing(built_set):
    directory, _, conversations = built_set
    for conversation in conversations:
        track = read_user_audio(directory, conversation)
        turns = conversation["user_turns"]
        assert track.size == round(conversation["duration_s"] * SAMPLE_RATE)
        assert conversation["duration_s"] == pytest.approx(turns[-1]["end_s"] + 2.5, abs=1e-3)  # silence to answer
        assert _loud(track, turns[-1]["end_s"] + 0.01, conversation["duration_s"]) == 0.0
        for turn in turns:  # every span is speech, and nothing outside the spans is
            assert _loud(track, turn["start_s"], turn["end_s"]) > 0.05
        for before, after in zip(turns, turns[1:]):
            assert _loud(track, before["end_s"] + 0.01, after["start_s"] - 0.01) == 0.0
        task = conversation["task"]
        if task == "pause_handling":
            pause = conversation["pause"]
            assert 0.35 <= pause["end_s"] - pause["start_s"] <= 0.65
            assert (pause["start_s"], pause["end_s"]) == (turns[0]["end_s"], turns[1]["start_s"])
            assert not turns[0]["text"].rstrip().endswith((".", "?", "!"))  # the sentence is unfinished
        elif task == "interruption":
            question, interruption = turns
            assert 2.0 <= interruption["start_s"] - question["end_s"] <= 3.0
            assert conversation["interruption"] == {"start_s": interruption["start_s"], "end_s": interruption["end_s"]}
            assert conversation["end_of_turn_s"] == interruption["end_s"]
            assert conversation["persona"]["text_prompt"].startswith("You are a wise and friendly teacher.")
        elif task == "turn_taking":
            assert conversation["end_of_turn_s"] == turns[0]["end_s"] and len(turns) == 1
        elif task == "user_backchannel":
            backchannels = conversation["user_backchannels"]
            assert len(backchannels) == 3 and turns[1:] == backchannels
            assert backchannels[0]["start_s"] >= turns[0]["end_s"] + 1.0  # over the agent's answer
        elif task == "backchannel":
            assert len(turns) >= 3 and conversation["end_of_turn_s"] is None
        assert conversation["persona"]["voice"] in CONFIG.voices


def test_role_questions_test_one_persona_each_way(built_set):
    _, _, conversations = built_set
    role = [c for c in conversations if c["task"] == "role"]
    assert [c["role"]["question_type"] for c in role] == list(ROLE_QUESTION_TYPES)
    persona = role[0]["persona"]
    assert all(c["persona"] == persona for c in role)  # 6 questions of one persona
    assert persona["text_prompt"].startswith(f"<system> You are {persona['name']},")
    name = next(c for c in role if c["role"]["question_type"] == "name")
    assert persona["name"] in name["role"]["expected"]


def test_a_set_with_missing_files_is_refused_with_the_list(built_set, tmp_path):
    directory, _, conversations = built_set
    copy = tmp_path / "copy"
    build_test_set(CONFIG, copy, seed=7)
    (copy / conversations[0]["user_audio"]).unlink()
    (copy / "conversations" / f"{conversations[1]['id']}.json").unlink()
    with pytest.raises(testset.TestSetMissingFilesError) as refused:
        load_test_set(copy)
    assert sorted(refused.value.missing) == sorted([conversations[0]["user_audio"],
                                                     f"conversations/{conversations[1]['id']}.json"])
    assert "2 file(s) missing" in str(refused.value)
    (copy / "manifest.json").unlink()
    with pytest.raises(testset.TestSetMissingFilesError, match="manifest.json"):
        load_test_set(copy)


def test_bad_metadata_is_refused_naming_the_file_and_key(built_set, tmp_path):
    directory, _, conversations = built_set
    copy = tmp_path / "copy"
    build_test_set(CONFIG, copy, seed=7)
    metadata = copy / "conversations" / f"{conversations[0]['id']}.json"
    metadata.write_text(json.dumps(dict(json.loads(metadata.read_text()), task="karaoke")))
    with pytest.raises(testset.TestSetError, match=f"{conversations[0]['id']}.json: task"):
        load_test_set(copy)
    with pytest.raises(testset.TestSetError, match="not empty"):
        build_test_set(CONFIG, copy, seed=7)
