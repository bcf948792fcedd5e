"""The OpenAI-compatible speech endpoint backend, against a local stand-in that speaks with espeak-ng
(tests/speech_server.py: voices `alex` and `barista`; `broken`, `chatty`, `mute` and `mumbler` misbehave)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from plexray.config import load_config
from plexray.data.config import SpeakerTTSConfig, SpeechEndpointConfig, TTSConfig
from plexray.data.errors import DataError
from plexray.data.personas import Voice, load_library
from plexray.data.pipeline import generate
from plexray.data.plan import plan_conversations
from plexray.data.quality import speech_quality_problem, transcript_aligned_fraction
from plexray.data.rejects import read_rejects
from plexray.data.shards import shard_files
from plexray.data.stages import synthesize_item
from plexray.data.tts import EndpointSynthesizer, WordTiming, check_tts, decode_speech, split_words, trim_silence
from plexray.errors import ConfigError
from plexray.model.prompt import SAMPLE_RATE
from plexray.settings import PlexrayConfig
from plexray.speech.align import PocketSphinxAligner

from speech_server import SpeechServer, stand_in_speech, wav_bytes

# PocketSphinx normalises its features with a running mean over what its decoder heard before, so the
# same audio aligned by a fresh aligner and by one that aligned other speech first differs by a frame or a few
ALIGNER_DRIFT_S = 0.05


@pytest.fixture(scope="module")
def server():
    speech_server = SpeechServer()
    yield speech_server
    speech_server.close()


def _endpoint(server, **extra) -> SpeechEndpointConfig:
    return SpeechEndpointConfig(base_url=server.base_url, max_retries=0, backoff_s=0.0, **extra)


@pytest.mark.parametrize("response_format", ["wav", "pcm"])
def test_endpoint_speech_is_decoded_at_24_khz_and_timed_by_the_aligner(server, response_format):
    text = "Could I get a large oat milk latte, please?"
    utterance = EndpointSynthesizer(_endpoint(server, response_format=response_format), "barista").speak(text, Voice())
    assert server.requests[-1] == {"model": "kokoro", "input": text, "voice": "barista",
                                   "response_format": response_format}  # the whole sentence in one request
    expected = trim_silence(stand_in_speech(text, "barista"))
    assert abs(utterance.duration_s - expected.size / SAMPLE_RATE) < 0.02  # the same speech, at 24 kHz
    aligned = PocketSphinxAligner().align(utterance.samples, SAMPLE_RATE, split_words(text))
    assert not aligned.interpolated
    assert [(w.word, w.start_s, w.end_s, w.interpolated) for w in utterance.words] == [
        (w.text, pytest.approx(w.start_s, abs=ALIGNER_DRIFT_S), pytest.approx(w.end_s, abs=ALIGNER_DRIFT_S), False)
        for w in aligned.words]


@pytest.mark.parametrize("voice, problem", [
    ("broken", "HTTP 500: upstream exploded"),
    ("chatty", "unusable reply: ValueError: not audio: Content-Type 'application/json'"),
    ("mute", "unusable reply: ValueError: silent audio: 1.00 s"),
    ("nobody", "HTTP 400"),
])
def test_an_endpoint_that_answers_no_speech_is_an_error_naming_it(server, voice, problem):
    with pytest.raises(DataError) as failure:
        EndpointSynthesizer(_endpoint(server), voice).speak("A fresh sentence for the " + voice, Voice())
    assert type(failure.value).__name__ == "TTSError"
    assert server.base_url in str(failure.value) and problem in str(failure.value)


def test_raw_bytes_that_are_not_audio_are_named():
    config = SpeechEndpointConfig()
    with pytest.raises(ValueError, match="not a PCM WAV file"):
        decode_speech(httpx.Response(200, content=b"<html>gateway</html>"), config)
    with pytest.raises(ValueError, match="odd number of bytes"):
        decode_speech(httpx.Response(200, content=b"\x01\x02\x03"), config.model_copy(update={"response_format": "pcm"}))
    with pytest.raises(ValueError, match="empty audio"):
        decode_speech(httpx.Response(200, content=wav_bytes(np.zeros(0), 16000)), config)


def test_voices_per_speaker_and_one_backend_for_both(monkeypatch):
    assert TTSConfig.model_validate("espeak") == TTSConfig()
    both = TTSConfig.model_validate("endpoint")
    assert (both.agent.backend, both.user.backend) == ("endpoint", "endpoint")
    monkeypatch.delenv("PLEXRAY_TTS_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match=r"data.speech.tts.agent.endpoint.base_url or \$PLEXRAY_TTS_BASE_URL"):
        check_tts(both, ["angry-alex"], ["wrong-order"])
    monkeypatch.setenv("PLEXRAY_TTS_BASE_URL", "http://127.0.0.1:9/v1")
    tts = TTSConfig(agent=SpeakerTTSConfig(backend="endpoint", voices={"angry-alex": "alex"}),
                    user=SpeakerTTSConfig(backend="endpoint", default_voice="barista"))
    check_tts(tts, ["angry-alex"], ["wrong-order", "first-time-order"])
    with pytest.raises(ConfigError, match=r"data.speech.tts.agent.voices has no endpoint voice for persona id\(s\) "
                                          r"\['nervous-nancy'\]"):
        check_tts(tts, ["angry-alex", "nervous-nancy"], ["wrong-order"])


def _data_config(server, tmp_path, agent_voice: str = "alex", scenarios: str = "wrong-order", **user_voices):
    overrides = ["data.library.personas=[angry-alex]", f"data.library.scenarios=[{scenarios}]",
                 "data.dialogue.min_turns=4", "data.dialogue.max_turns=4", "data.speech.max_duration_s=12",
                 "data.encode.batch_size=2", "data.rows_per_shard=2", "data.max_attempts=1",
                 f"data.output_dir={tmp_path}"]
    endpoint = json.dumps({"base_url": server.base_url, "max_retries": 0, "backoff_s": 0.0})
    tts = (f'data.speech.tts={{"agent": {{"backend": "endpoint", "endpoint": {endpoint}, '
           f'"voices": {{"angry-alex": "{agent_voice}"}}}}, "user": {{"backend": "endpoint", "endpoint": {endpoint}, '
           f'"default_voice": "barista", "voices": {json.dumps(user_voices)}}}}}')
    return load_config(PlexrayConfig, None, [*overrides, tts])


@pytest.mark.parametrize("agent_voice, user_voice, stage, reason", [
    ("broken", "barista", "synthesize", "error: TTSError: http://127.0.0.1"),
    ("alex", "chatty", "synthesize", "error: TTSError: http://127.0.0.1"),
    ("mumbler", "mumbler", "quality", "low_aligned_fraction: the aligner placed"),
])
def test_a_conversation_the_endpoint_cannot_speak_is_rejected_with_the_reason(
        server, tmp_path, agent_voice, user_voice, stage, reason):
    config = _data_config(server, tmp_path, agent_voice, **{"wrong-order": user_voice})
    library = load_library(personas=["angry-alex"], scenarios=["wrong-order"])
    item = plan_conversations(config.data, library)[0]
    assert synthesize_item(vars(item), config.data, library, tmp_path) == []
    record = read_rejects(tmp_path)[item.id]
    assert (record["stage"], record["kind"]) == (stage, "error" if stage == "synthesize" else "invalid")
    assert record["reason"].startswith(reason)


def test_a_dataset_builds_through_the_endpoint_and_a_failing_voice_is_rejected(ray_cluster, server, tmp_path):
    """Three conversations; the counterpart of one scenario gets HTTP 500s. That one is rejected with the
    reason, the other two are written with word times from the aligner, and one reject in three is over
    data.max_reject_fraction (0.2): the run fails naming the endpoint as the cause, keeping what it wrote."""
    server.requests.clear()
    config = _data_config(server, tmp_path, scenarios="wrong-order, first-time-order, payment-trouble",
                          **{"payment-trouble": "broken"})
    with pytest.raises(DataError, match=r"1 of 3 planned conversations \(33%\) were rejected.*"
                                        r"most common cause: synthesize error TTSError"):
        generate(config)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "too_many_rejects" and (manifest["written"], manifest["rejected"]) == (2, 1)
    [reject] = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert reject["scenario_id"] == "payment-trouble" and "HTTP 500: upstream exploded" in reject["reason"]
    assert {request["voice"] for request in server.requests} == {"alex", "barista", "broken"}
    assert any(len(request["input"].split()) > 3 for request in server.requests)  # whole sentences
    quality = manifest["stats"]["speech_quality"]["aligned_fraction"]
    assert quality["count"] == 2 and quality["min"] >= 0.5
    assert (tmp_path / "stats" / "aligned_fraction.png").stat().st_size > 1000
    aligner = PocketSphinxAligner()
    rows = [row for path in shard_files(tmp_path)
            for row in pq.read_table(path, columns=["scenario_id", "transcript"]).to_pylist()]
    assert sorted(row["scenario_id"] for row in rows) == ["first-time-order", "wrong-order"]
    for row in rows:
        transcript = json.loads(row["transcript"])
        # a whole user turn: its words as the aligner times them on the stand-in's speech of it
        turn = next(t for t in transcript if t["speaker"] == "user" and t["kind"] == "turn")
        words = [word for word, _, _ in turn["words"]]
        aligned = aligner.align(trim_silence(stand_in_speech(" ".join(words), "barista")), SAMPLE_RATE, words)
        assert [[w.text, turn["start_s"] + w.start_s, turn["start_s"] + w.end_s] for w in aligned.words] == [
            [word, pytest.approx(start, abs=ALIGNER_DRIFT_S), pytest.approx(end, abs=ALIGNER_DRIFT_S)]
            for word, start, end in turn["words"]]


def test_the_quality_gate_names_the_conversation_or_the_voice_sample():
    transcript = [{"words": [["Hi", 0.0, 0.3]] * 4, "interpolated_words": 1},
                  {"words": [["Yes", 1.0, 1.3]] * 4, "interpolated_words": 3}]
    placed, unplaced = WordTiming("hello", 0.0, 0.4), WordTiming("there", 0.4, 0.8, interpolated=True)
    assert transcript_aligned_fraction(transcript) == 0.5
    assert speech_quality_problem(transcript, [placed, unplaced], 0.5) is None  # at the threshold: kept
    assert speech_quality_problem(transcript, [placed], 0.6).startswith(
        "low_aligned_fraction: the aligner placed 50% of the conversation's words")
    assert speech_quality_problem(transcript, [placed, unplaced, unplaced], 0.5).startswith(
        "low_aligned_fraction: the aligner placed 33% of the voice sample's words")
