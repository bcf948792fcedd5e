"""Both channels of a recorded conversation, read from its file(s), checked, at the model's 24 kHz.

Problems with the audio are the conversation's own (it is rejected with the reason, the run goes on):
`RecordingProblem` carries a short tag (counted in the manifest's rejects_by_reason) and the detail.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import soxr
import sphn

from plexray.data.errors import DataError
from plexray.model.prompt import SAMPLE_RATE

# -80 dBFS: below what any microphone's own noise reaches; a channel this quiet holds no recording at all.
SILENT_PEAK = 1e-4


class RecordingProblem(DataError):
    """Audio that cannot be one of the dataset's conversations; `reason` is `<tag>: <detail>`."""

    def __init__(self, tag: str, detail: str):
        super().__init__(f"{tag}: {detail}")
        self.reason = f"{tag}: {detail}"


@dataclasses.dataclass(frozen=True)
class Recording:
    agent: np.ndarray  # [N] float32 at 24 kHz
    user: np.ndarray  # [N] float32 at 24 kHz, same length: the two channels share one clock
    cut_s: float  # seconds of the source left out past data.ingest.max_duration_s (0 when none)

    @property
    def duration_s(self) -> float:
        return self.agent.size / SAMPLE_RATE


def read_audio(path: str) -> tuple[np.ndarray, int]:
    """The file's samples [channels, N] float32 and its sample rate (wav, flac, mp3, ogg vorbis or opus)."""
    if not Path(path).is_file():
        raise RecordingProblem("missing_file", f"{path}: no such file")
    try:
        try:
            pcm, rate = sphn.read(path)
        except Exception:
            if Path(path).suffix.lower() not in (".ogg", ".opus"):
                raise
            pcm, rate = sphn.read_opus(path)  # symphonia (sphn.read) has no opus decoder
    except Exception as exc:
        raise RecordingProblem("unreadable_audio", f"{path}: {type(exc).__name__}: {exc}") from None
    pcm = np.asarray(pcm, dtype=np.float32)
    if pcm.ndim != 2 or pcm.shape[1] == 0:
        raise RecordingProblem("empty_audio", f"{path}: no samples")
    if not np.isfinite(pcm).all():
        raise RecordingProblem("unreadable_audio", f"{path}: NaN or infinite samples")
    return pcm, int(rate)


def _at_model_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return samples
    return soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32, copy=False)


def _channel(path: str, expected_channels: int, index: int) -> np.ndarray:
    pcm, rate = read_audio(path)
    if pcm.shape[0] != expected_channels:
        layout = "stereo (agent_channel names the agent's side)" if expected_channels == 2 else "mono"
        raise RecordingProblem("wrong_channels", f"{path}: the index declares it {layout}, "
                                                 f"the file has {pcm.shape[0]} channel(s)")
    return _at_model_rate(pcm[index], rate)


def read_recording(item: dict, max_duration_s: float) -> Recording:
    """The agent and user channels of an index item (index.py), cut at `max_duration_s`.

    Two mono files of different lengths are padded with silence at the end to the longer: they are
    taken to start at the same moment, as the two sides of one call are recorded.
    """
    if item["stereo"] is not None:
        channel = int(item["agent_channel"])
        agent = _channel(item["stereo"], 2, channel)
        user = _channel(item["stereo"], 2, 1 - channel)
    else:
        agent, user = _channel(item["agent"], 1, 0), _channel(item["user"], 1, 0)
        length = max(agent.size, user.size)
        agent, user = (np.pad(channel, (0, length - channel.size)) for channel in (agent, user))
    limit = round(max_duration_s * SAMPLE_RATE)
    cut_s = max(0, agent.size - limit) / SAMPLE_RATE
    agent, user = agent[:limit], user[:limit]
    for name, samples in (("agent", agent), ("user", user)):
        if np.abs(samples).max() < SILENT_PEAK:
            source = item["stereo"] or item[name]
            raise RecordingProblem("silent_audio", f"{source}: the {name} channel is silent "
                                                   f"(peak {np.abs(samples).max():.1e} of full scale)")
    return Recording(agent, user, cut_s)


def read_voice_prompt(path: str) -> np.ndarray:
    """A voice prompt file, mixed down to mono, [N] float32 at 24 kHz."""
    pcm, rate = read_audio(path)
    return _at_model_rate(pcm.mean(axis=0), rate)
