"""Each channel of a recording: where there is speech (Silero VAD), and its words with times (ASR).

`ChannelTranscriber` is the Ray Data actor (one recogniser per actor, GPU when the backend uses one);
it writes one transcript file per conversation, `<output_dir>/transcripts/<id>.json`, as it goes. Those
files are the resume point of the expensive step: a rerun transcribes only conversations that have
none made with the same ASR settings, and the speech-ratio gate is applied when rows are built
(conversation.py), so changing the threshold needs no new transcription.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np

from plexray.data.ingest.config import IngestConfig
from plexray.data.ingest.recording import RecordingProblem, read_recording
from plexray.data.rejects import clear_reject, write_reject
from plexray.model.prompt import SAMPLE_RATE
from plexray.speech.asr import ASRConfig, Transcriber, Word, make_transcriber, transcribe_speech
from plexray.speech.vad import Segment, speech_segments

logger = logging.getLogger(__name__)

TRANSCRIPTS_DIR = "transcripts"
CHANNELS = ("agent", "user")
AUDIO_COLUMNS = {"agent": "agent_audio", "user": "user_audio"}


@dataclasses.dataclass(frozen=True)
class ChannelTranscript:
    segments: list[Segment]  # speech found by the VAD, seconds from the recording's start
    words: list[Word]  # recognised words in those segments, same clock

    def speech_ratio(self, duration_s: float) -> float:
        return sum(segment.duration_s for segment in self.segments) / duration_s


def transcribe_channel(transcriber: Transcriber, samples: np.ndarray, sample_rate: int) -> ChannelTranscript:
    """Speech segments and words of one channel ([N] float at `sample_rate`); the ASR hears only the segments."""
    segments = speech_segments(samples, sample_rate)
    return ChannelTranscript(segments, transcribe_speech(transcriber, samples, sample_rate, segments))


# ---- the transcript file ------------------------------------------------------------------------

def transcript_path(output_dir: Path, item_id: str) -> Path:
    return output_dir / TRANSCRIPTS_DIR / f"{item_id}.json"


def write_transcript(output_dir: Path, item_id: str, asr: ASRConfig, asr_name: str, duration_s: float, cut_s: float,
                     channels: dict[str, ChannelTranscript]) -> None:
    path = transcript_path(output_dir, item_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"id": item_id, "asr": asr.model_dump(mode="json"), "asr_name": asr_name,
              "duration_s": duration_s, "cut_s": cut_s,
              "channels": {name: {"speech_ratio": transcript.speech_ratio(duration_s),
                                  "segments": [[s.start_s, s.end_s] for s in transcript.segments],
                                  "words": [[w.text, w.start_s, w.end_s, w.confidence] for w in transcript.words]}
                           for name, transcript in channels.items()}}
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, path)  # atomic: a killed worker leaves no half-written transcript


def read_transcript(output_dir: Path, item_id: str, asr: ASRConfig) -> dict | None:
    """The conversation's transcript record, or None when there is none made with these ASR settings."""
    path = transcript_path(output_dir, item_id)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("asr") == asr.model_dump(mode="json") else None


def channel_transcript(record: dict, channel: str) -> ChannelTranscript:
    saved = record["channels"][channel]
    return ChannelTranscript([Segment(start, end) for start, end in saved["segments"]],
                             [Word(text, start, end, confidence) for text, start, end, confidence in saved["words"]])


# ---- the two stages ----------------------------------------------------------------------------

def recording_for_asr(item: dict, max_duration_s: float, output_dir: Path) -> list[dict]:
    """An index item -> [its two channels at 24 kHz], or [] with a reject (missing, unreadable, wrong layout,
    silent). A Ray task, so files are decoded in parallel, apart from the ASR actors."""
    try:
        recording = read_recording(item, max_duration_s)
    except RecordingProblem as problem:
        write_reject(output_dir, item["id"], item["persona_id"], item["scenario_id"], "read", problem.reason,
                     "invalid")
        return []
    return [{"id": item["id"], "persona_id": item["persona_id"], "scenario_id": item["scenario_id"],
             "agent_audio": recording.agent, "user_audio": recording.user, "cut_s": recording.cut_s}]


class ChannelTranscriber:
    """A Ray Data actor: one recogniser, loaded once; each batch's channels transcribed, transcripts written."""

    def __init__(self, config: IngestConfig, output_dir: str, transcriber: Transcriber | None = None):
        self.config = config
        self.output_dir = Path(output_dir)
        self.transcriber = transcriber or make_transcriber(config.asr)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done = []
        for index, item_id in enumerate(batch["id"]):
            item_id = str(item_id)
            try:
                channels = {channel: transcribe_channel(self.transcriber, np.asarray(batch[column][index], np.float32),
                                                        SAMPLE_RATE)
                            for channel, column in AUDIO_COLUMNS.items()}
                duration_s = len(batch["agent_audio"][index]) / SAMPLE_RATE
                write_transcript(self.output_dir, item_id, self.config.asr, self.transcriber.name, duration_s,
                                 float(batch["cut_s"][index]), channels)
                clear_reject(self.output_dir, item_id)  # an earlier run may have rejected it
                done.append(item_id)
            except Exception as exc:  # one conversation's failure must not sink the batch
                logger.warning("transcribing %s failed: %s: %s", item_id, type(exc).__name__, exc)
                write_reject(self.output_dir, item_id, str(batch["persona_id"][index]),
                             str(batch["scenario_id"][index]), "transcribe", f"error: {type(exc).__name__}: {exc}",
                             "error")
        return {"id": np.array(done, dtype=object)}
