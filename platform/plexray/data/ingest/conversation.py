"""One recorded conversation -> one audio row for the encoder (the row `synthesize_item` makes for generated
data): the speech-ratio gate, turns from the transcript, the system prompt and the voice prompt.

Both channels are loudness-normalised as wholes to data.speech.loudness_db (the level generated data
has; silence does not count towards loudness), so a quiet recording side trains like a loud one; the
timing is the recording's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from plexray.data.annotate import annotate_one
from plexray.data.config import DataConfig
from plexray.data.dialogue.llm import ChatClient
from plexray.data.ingest.recording import RecordingProblem, read_recording, read_voice_prompt
from plexray.data.ingest.transcribe import CHANNELS, channel_transcript, read_transcript
from plexray.data.ingest.turns import conversation_turns
from plexray.data.ingest.voice import voice_window
from plexray.data.rejects import clear_reject, write_reject
from plexray.model.prompt import SAMPLE_RATE, wrap_system_prompt
from plexray.model.voices import normalize_loudness


class Rejected(Exception):
    """This conversation does not go into the dataset: `stage`, `reason` (tag: detail) and `kind` as rejects record."""

    def __init__(self, stage: str, reason: str, kind: str):
        super().__init__(reason)
        self.stage, self.reason, self.kind = stage, reason, kind


def speech_ratio_problem(record: dict, min_speech_ratio: float) -> str | None:
    """The gate on a transcript record: the first channel with less speech than `min_speech_ratio`, as a reason."""
    for channel in CHANNELS:
        ratio = record["channels"][channel]["speech_ratio"]
        if ratio < min_speech_ratio:
            return (f"low_speech_ratio: the {channel} channel is speech for {ratio:.1%} of its "
                    f"{record['duration_s']:.1f} s (Silero VAD), below data.ingest.min_speech_ratio "
                    f"{min_speech_ratio:.1%}")
    return None


def system_prompt_for(item: dict, transcript: list[dict], config: DataConfig) -> str:
    """The index's prompt, else data.ingest.default_system_prompt, else one the LLM writes from the transcript."""
    given = item.get("system_prompt") or config.ingest.default_system_prompt
    if given:
        return wrap_system_prompt(given)
    try:
        turns = [{"speaker": turn["speaker"], "text": turn["text"]} for turn in transcript if turn["kind"] == "turn"]
        return annotate_one(ChatClient(config.dialogue.llm), {"turns": turns})
    except Exception as exc:  # the endpoint failed after its retries, or answered something unusable
        raise Rejected("annotate", f"error: {type(exc).__name__}: {exc}", "error") from exc


def voice_prompt_for(item: dict, agent: np.ndarray, record: dict, config: DataConfig) -> np.ndarray:
    """[V] float32 at 24 kHz, loudness-normalised as generation's voice samples are; empty for none."""
    if not config.include_voice_prompt:
        return np.zeros(0, np.float32)
    if item.get("voice_prompt"):
        try:
            samples = read_voice_prompt(item["voice_prompt"])
        except RecordingProblem as problem:
            raise Rejected("read", f"voice_prompt_{problem.reason}", "invalid") from None
    else:
        agent_speech = channel_transcript(record, "agent").segments
        window = voice_window(agent_speech, channel_transcript(record, "user").segments, config.ingest.voice_prompt_s)
        if window is None:
            raise Rejected("voice", "no_clean_agent_speech: the agent never speaks while the user is silent; "
                                    "give a voice_prompt file in the index", "invalid")
        samples = agent[round(window.start_s * SAMPLE_RATE):round(window.end_s * SAMPLE_RATE)]
    return normalize_loudness(samples)


def _audio_row(item: dict, config: DataConfig, output_dir: Path) -> dict:
    record = read_transcript(output_dir, item["id"], config.ingest.asr)
    if record is None:  # run.py passes only transcribed items; a transcript deleted meanwhile is this
        raise Rejected("transcribe", "error: RuntimeError: its transcript file disappeared", "error")
    problem = speech_ratio_problem(record, config.ingest.min_speech_ratio)
    if problem:
        raise Rejected("quality", problem, "invalid")
    transcript = conversation_turns(channel_transcript(record, "agent").words, channel_transcript(record, "user").words)
    if not any(turn["speaker"] == "agent" for turn in transcript):
        raise Rejected("transcribe", f"no_agent_words: the ASR ({record['asr_name']}) recognised no words on the "
                                     "agent channel", "invalid")
    try:
        recording = read_recording(item, config.ingest.max_duration_s)
    except RecordingProblem as problem:  # the file changed since it was transcribed
        raise Rejected("read", problem.reason, "invalid") from None
    loudness = config.speech.loudness_db
    return {"id": item["id"], "persona_id": item["persona_id"], "scenario_id": item["scenario_id"],
            "system_prompt": system_prompt_for(item, transcript, config),
            "transcript": json.dumps(transcript),
            "agent_audio": normalize_loudness(recording.agent, loudness),
            "user_audio": normalize_loudness(recording.user, loudness),
            "voice_audio": voice_prompt_for(item, recording.agent, record, config)}


def recorded_conversation(item: dict, config: DataConfig, output_dir: Path) -> list[dict]:
    """The pipeline's first stage for ingest: a transcribed index item -> [audio row], or [] with a reject."""
    try:
        row = _audio_row(item, config, output_dir)
    except Rejected as rejected:
        write_reject(output_dir, item["id"], item["persona_id"], item["scenario_id"], rejected.stage, rejected.reason,
                     rejected.kind)
        return []
    clear_reject(output_dir, item["id"])
    return [row]
