"""`plexray data ingest` on recordings made here: two espeak-ng speakers on two channels, real Silero VAD,
real PocketSphinx ASR, real Ray Data, the demo checkpoint's Mimi; bad files rejected with their reasons."""

import json
import math

import numpy as np
import pytest
import soxr
import sphn

from plexray.audio.espeak import EspeakVoice, synthesize
from plexray.cli import main
from plexray.config import load_config
from plexray.data.errors import DataError
from plexray.data.ingest.conversation import speech_ratio_problem
from plexray.data.ingest.index import read_index
from plexray.data.ingest.run import ingest
from plexray.data.ingest.turns import conversation_turns
from plexray.data.ingest.voice import voice_window
from plexray.model.architectures import TEXT_END_OF_PADDING_ID, TEXT_PADDING_ID
from plexray.model.prompt import FRAME_RATE, SAMPLE_RATE, SILENCE_FRAMES
from plexray.settings import PlexrayConfig
from plexray.speech.asr import Word
from plexray.speech.vad import Segment
from plexray.train.data import collate, open_splits
from openai_stub import OpenAICompatibleServer

AGENT_VOICE = EspeakVoice("en-us", "m3", 40, 165)
USER_VOICE = EspeakVoice("en-us", "f3", 70, 170)
ANNOTATED_PROMPT = "You are Sam, a cheerful barista who takes coffee orders."


def _speech(text: str, voice: EspeakVoice) -> np.ndarray:
    samples = synthesize(text, voice)
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return samples[loud[0]:loud[-1] + 1]


def _conversation(turns: list[tuple[str, str, float]]) -> tuple[np.ndarray, np.ndarray, list[tuple[str, float, float]]]:
    """(speaker, text, offset from the previous turn's end in s, negative: overlap) -> agent, user [N] at 24 kHz
    and where each turn is (speaker, start_s, end_s)."""
    spoken = [(speaker, _speech(text, AGENT_VOICE if speaker == "agent" else USER_VOICE), offset)
              for speaker, text, offset in turns]
    placed, end = [], 0.3
    for speaker, samples, offset in spoken:
        start = end + offset
        end = start + samples.size / SAMPLE_RATE
        placed.append((speaker, start, end))
    channels = {"agent": np.zeros(round((end + 0.5) * SAMPLE_RATE), np.float32)}
    channels["user"] = np.zeros_like(channels["agent"])
    for (speaker, samples, _), (_, start, _) in zip(spoken, placed):
        first = round(start * SAMPLE_RATE)
        channels[speaker][first:first + samples.size] += 0.5 * samples
    return channels["agent"], channels["user"], placed


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """An index of 2 good conversations (a stereo wav with the agent on the right; two mono files, a wav at 16 kHz
    and an Ogg Opus, with a voice prompt file at 22.05 kHz) and 5 bad ones."""
    folder = tmp_path_factory.mktemp("recordings")
    agent, user, call_turns = _conversation([
        ("agent", "Hello, thank you for calling the coffee shop. What can I get for you today?", 0.0),
        ("user", "I would like a large latte with oat milk please.", -0.3),  # the caller starts early
        ("agent", "Sure, one large latte with oat milk. Anything else?", 0.2)])
    sphn.write_wav(str(folder / "call.wav"), np.stack([user, agent]), SAMPLE_RATE)  # agent on the right
    agent2, user2, pair_turns = _conversation([
        ("agent", "Good morning, how can I help you?", 0.0),
        ("user", "Do you have any muffins left?", 0.25),
        ("agent", "Yes, we have blueberry muffins.", 0.15)])
    sphn.write_wav(str(folder / "pair-agent.wav"), soxr.resample(agent2, SAMPLE_RATE, 16000)[None], 16000)
    sphn.write_opus(str(folder / "pair-user.ogg"), user2[None], SAMPLE_RATE)  # Ogg Opus: read back at 48 kHz
    voice = _speech("This is how I sound when I talk to my customers.", AGENT_VOICE)
    sphn.write_wav(str(folder / "voice.wav"), soxr.resample(voice, SAMPLE_RATE, 22050)[None], 22050)
    (folder / "garbage.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    sphn.write_wav(str(folder / "silent.wav"), np.zeros((2, 2 * SAMPLE_RATE), np.float32), SAMPLE_RATE)
    entries = [
        {"id": "call", "stereo": "call.wav", "agent_channel": "right"},  # system prompt: back-annotated by the LLM
        {"id": "pair", "agent": "pair-agent.wav", "user": "pair-user.ogg", "voice_prompt": "voice.wav",
         "system_prompt": "You are a baker.", "persona": "baker"},
        {"id": "gone", "stereo": "gone.wav", "agent_channel": 0},
        {"id": "half-gone", "agent": "pair-agent.wav", "user": "gone-user.wav"},
        {"id": "mono-as-stereo", "stereo": "pair-agent.wav", "agent_channel": "left"},
        {"id": "garbage", "stereo": "garbage.wav", "agent_channel": "left"},
        {"id": "silent", "stereo": "silent.wav", "agent_channel": "left"},
    ]
    index = folder / "calls.jsonl"
    index.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    return {"index": index, "call": (agent, call_turns), "pair": (agent2, pair_turns), "voice_s": voice.size / SAMPLE_RATE}


class Annotator:
    """The LLM: answers every back-annotation with one prompt and keeps what it was shown."""

    def __init__(self):
        self.dialogues: list[str] = []

    def answer(self, path: str, body: dict):
        self.dialogues.append(body["messages"][-1]["content"])
        content = json.dumps({"system_prompt": ANNOTATED_PROMPT})
        return 200, {"id": "x", "object": "chat.completion", "model": "test",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                  "finish_reason": "stop"}]}


def _overrides(output_dir, base_url, *extra):
    return [f"data.output_dir={output_dir}", f"data.dialogue.llm.base_url={base_url}",
            "data.dialogue.llm.max_retries=0", "data.ingest.batch_size=2", *extra]


@pytest.fixture(scope="module")
def ingested(ray_cluster, recordings, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ingested")
    annotator = Annotator()
    with OpenAICompatibleServer(annotator.answer) as server:
        overrides = _overrides(output_dir, server.base_url, "data.max_reject_fraction=1")
        manifest = ingest(recordings["index"], load_config(PlexrayConfig, None, overrides))
    return output_dir, manifest, annotator


def _rows(output_dir) -> dict[str, dict]:
    train, _ = open_splits(output_dir, 0.0)  # as training reads them
    return {row["id"]: row for row in train.take_all()}


def test_ingest_writes_shards_training_reads_with_text_on_the_agent_channel(ingested, recordings):
    output_dir, manifest, annotator = ingested
    assert manifest["status"] == "complete" and manifest["reconciled"]
    assert (manifest["planned"], manifest["written"], manifest["rejected"]) == (7, 2, 5)
    assert manifest["per_persona"] == {"baker": 1, "recorded": 1}
    assert manifest["ingest"]["asr_names"] == ["pocketsphinx"]
    assert manifest["ingest"]["speech_ratio"]["agent"]["count"] == manifest["ingest"]["transcribed"] == 2
    assert (output_dir / "stats" / "speech_ratio.png").stat().st_size > 1000
    for channel in ("agent", "user"):  # the VAD's share of speech against where the test placed it
        placed = [sum(end - start for speaker, start, end in recordings[name][1] if speaker == channel)
                  / (recordings[name][0].size / SAMPLE_RATE) for name in ("call", "pair")]
        assert manifest["ingest"]["speech_ratio"][channel]["min"] == pytest.approx(min(placed), abs=0.08)
    rows = _rows(output_dir)
    assert set(rows) == {"call", "pair"}
    batch = collate({name: [row[name] for row in rows.values()] for name in ("id", "codes", "num_frames",
                                                                              "prompt_start", "prompt_end")},
                    max_frames=4096, mask_prompt=True)
    assert batch.codes.shape[1] == 17 and batch.loss_frames.any()

    for name in ("call", "pair"):
        row, (agent, turns) = rows[name], recordings[name]
        codes, end = row["codes"], row["prompt_end"]
        assert row["num_frames"] - end == math.ceil(agent.size / 1920)  # the recording's length, frame for frame
        transcript = json.loads(row["transcript"])
        # the recording's own timing: each spoken turn is found where it was placed, on its own channel
        for speaker, start_s, end_s in turns:
            found = [t for t in transcript if t["speaker"] == speaker and t["start_s"] < end_s and t["end_s"] > start_s]
            assert found and min(t["start_s"] for t in found) == pytest.approx(start_s, abs=0.3)
        # the agent's text stream carries text only while the agent speaks (a word's tokens may run a few frames on)
        text = codes[0, end:]
        token_frames = np.flatnonzero((text != TEXT_PADDING_ID) & (text != TEXT_END_OF_PADDING_ID))
        assert token_frames.size > 5
        agent_frames = np.zeros(text.size, bool)
        for speaker, start_s, end_s in turns:
            if speaker == "agent":
                agent_frames[int(start_s * FRAME_RATE) - 2:int(end_s * FRAME_RATE) + 6] = True
        assert agent_frames[token_frames].all()
        for speaker, start_s, end_s in turns:  # every agent turn has text
            if speaker == "agent":
                assert ((token_frames >= start_s * FRAME_RATE - 2) & (token_frames <= end_s * FRAME_RATE + 6)).any()

    # the LLM wrote the stereo call's prompt from its transcript; the pair's came with the index
    assert rows["call"]["system_prompt"] == f"<system> {ANNOTATED_PROMPT} <system>"
    assert rows["pair"]["system_prompt"] == "<system> You are a baker. <system>"
    assert len(annotator.dialogues) == 1 and "agent:" in annotator.dialogues[0] and "user:" in annotator.dialogues[0]
    # voice prompts: the pair's file (its frames, give or take the one the prompt phase drops) and the call's
    # own agent speech (at most 10 s)
    pair_tokens = rows["pair"]["codes"][0, :rows["pair"]["prompt_end"]]
    pair_voice = np.flatnonzero(pair_tokens != TEXT_PADDING_ID)[0] - SILENCE_FRAMES
    assert abs(pair_voice - recordings["voice_s"] * FRAME_RATE) <= 2
    call_tokens = rows["call"]["codes"][0, :rows["call"]["prompt_end"]]
    assert 2 * FRAME_RATE < np.flatnonzero(call_tokens != TEXT_PADDING_ID)[0] - SILENCE_FRAMES <= 10 * FRAME_RATE


def test_bad_recordings_are_rejected_with_reasons_and_too_many_fail_the_run(ingested, recordings, capsys):
    output_dir, manifest, _ = ingested
    rejects = {json.loads(line)["id"]: json.loads(line) for line in (output_dir / "rejects.jsonl").read_text().splitlines()}
    reasons = {item_id: record["reason"] for item_id, record in rejects.items()}
    assert reasons["gone"].startswith("missing_file: ") and reasons["gone"].endswith("gone.wav: no such file")
    assert reasons["half-gone"].startswith("missing_file: ") and "gone-user.wav" in reasons["half-gone"]
    assert reasons["mono-as-stereo"].startswith("wrong_channels: ") and "the file has 1 channel" in reasons["mono-as-stereo"]
    assert reasons["garbage"].startswith("unreadable_audio: ")
    assert reasons["silent"].startswith("silent_audio: ") and "agent channel is silent" in reasons["silent"]
    assert manifest["rejects_by_reason"] == {"missing_file": 2, "wrong_channels": 1, "unreadable_audio": 1,
                                             "silent_audio": 1}

    # Again with the default limit: nothing is redone or lost, and the run fails naming the commonest cause.
    with OpenAICompatibleServer(Annotator().answer) as server:
        overrides = _overrides(output_dir, server.base_url, "data.max_reject_fraction=0.2")
        assert main(["data", "ingest", str(recordings["index"]),
                     *[argument for item in overrides for argument in ("--set", item)]]) == 2
    error = capsys.readouterr().err
    assert "5 of 7 planned conversations (71%) were rejected" in error and "read missing_file (2 conversations)" in error
    rerun = json.loads((output_dir / "manifest.json").read_text())
    assert rerun["status"] == "too_many_rejects" and rerun["written"] == 2
    assert rerun["run"]["skipped_existing"] == 2 and rerun["ingest"]["transcribed_this_run"] == 0
    assert set(_rows(output_dir)) == {"call", "pair"}


def test_a_malformed_index_or_no_prompt_source_fails_before_any_work(tmp_path):
    index = tmp_path / "index.jsonl"
    index.write_text(json.dumps({"stereo": "a.wav"}) + "\n")
    with pytest.raises(DataError, match=r"index.jsonl:1: .*'stereo' needs 'agent_channel'"):
        read_index(index)
    index.write_text(json.dumps({"agent": "a.wav"}) + "\n")
    with pytest.raises(DataError, match=r"index.jsonl:1: .*both 'agent' and 'user'"):
        read_index(index)
    index.write_text(json.dumps({"id": "a", "stereo": "a.wav", "agent_channel": 1}) + "\n"
                     + json.dumps({"id": "a", "agent": "b.wav", "user": "c.wav"}) + "\n")
    with pytest.raises(DataError, match=r"index.jsonl:2: id 'a' is also on line 1"):
        read_index(index)
    index.write_text(json.dumps({"stereo": "a.wav", "agent_channel": "right", "speaker": "x"}) + "\n")
    with pytest.raises(DataError, match=r"speaker: Extra inputs are not permitted"):
        read_index(index)

    index.write_text(json.dumps({"stereo": "a.wav", "agent_channel": "right"}) + "\n")
    config = load_config(PlexrayConfig, None, [f"data.output_dir={tmp_path / 'out'}", "data.dialogue.llm.base_url=null"])
    with pytest.raises(DataError, match=r"no system_prompt in the index .* no LLM endpoint.*default_system_prompt"):
        ingest(index, config)
    assert not (tmp_path / "out").exists()


def test_turns_backchannels_and_the_voice_window():
    def words(*spans):
        return [Word(f"w{i}", start, end) for i, (start, end) in enumerate(spans)]

    # the agent speaks 0-3 s (a pause, no one else speaks, then more), the user says "mm-hm" at 1.2 s and
    # answers from 2.8 s, over the agent's last 0.2 s
    transcript = conversation_turns(words((0.0, 0.5), (0.6, 1.0), (1.5, 2.0), (2.1, 3.0)),
                                    words((1.2, 1.5), (2.8, 3.3), (3.4, 4.0)))
    assert [(t["speaker"], t["kind"], len(t["words"])) for t in transcript] == [
        ("agent", "turn", 4), ("user", "backchannel", 1), ("user", "turn", 2)]
    assert not transcript[0]["interrupted"]
    # an agent turn the user talks over for a second, after which the agent stops: interrupted
    talked_over = conversation_turns(words((0.0, 1.0), (1.1, 3.0)), words((2.0, 2.5), (2.6, 4.0)))
    assert talked_over[0]["interrupted"]

    agent = [Segment(0.0, 2.0), Segment(5.0, 9.0), Segment(9.5, 12.0), Segment(20.0, 25.0)]
    user = [Segment(1.0, 5.0), Segment(11.0, 11.5)]
    # from 5.0 s: 4 + 1.5 + 0.5 s clean speech in 10 s; from 20.0 s: 5 s
    assert voice_window(agent, user, 10.0) == Segment(5.0, 12.0)
    assert voice_window([Segment(1.0, 2.0)], [Segment(0.0, 3.0)], 10.0) is None

    record = {"duration_s": 20.0, "channels": {"agent": {"speech_ratio": 0.4}, "user": {"speech_ratio": 0.02}}}
    assert speech_ratio_problem(record, 0.05).startswith("low_speech_ratio: the user channel is speech for 2.0%")
    assert speech_ratio_problem(record, 0.01) is None
