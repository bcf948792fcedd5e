"""Two-channel conversation assembly with full-duplex timing.

The agent channel carries the persona (the voice the model learns to speak), the user channel
the counterpart. Each reply starts at a floor-transfer offset drawn from a natural shape (gaps peaked
near +200 ms, a long tail, short overlaps common: `timing.py`), stretched to the speaker's pause range
if it has one; the user sometimes barges in on a long agent turn, and the agent then stops (the model
must learn to yield); the listener sometimes says a short backchannel ("mm-hm") during a long turn,
at one of the speaker's pauses between words where there is one. Every utterance is loudness-normalised before
it is placed, so both channels sit at the same level.
"""

from __future__ import annotations

import dataclasses
import random
import typing as tp

import numpy as np

from plexray.data.config import SpeechConfig
from plexray.data.dialogue.script import Dialogue, Speaker
from plexray.data.personas import Persona, Scenario, Voice
from plexray.data.timing import draw_offset_s
from plexray.data.tts import SpeechSynthesizer, Utterance, WordTiming
from plexray.model.prompt import SAMPLE_RATE
from plexray.model.voices import normalize_loudness

LEAD_IN_S = 0.3  # silence before the first turn
TAIL_S = 0.4  # silence after the last turn
BACKCHANNELS = ("mm-hm", "yeah", "okay", "right", "uh-huh")
BARGE_IN_MIN_TURN_S = 1.5  # only long agent turns get interrupted
BACKCHANNEL_MIN_TURN_S = 2.0
BACKCHANNEL_PAUSE_S = 0.1  # a pause between words this long is where a listener's "mm-hm" goes
AGENT_REACTION_S = 0.25  # the agent stops this long after the user barges in
FADE_S = 0.03


@dataclasses.dataclass
class Conversation:
    agent: np.ndarray  # [N] float32 at 24 kHz
    user: np.ndarray  # [N] float32 at 24 kHz
    transcript: list[dict]  # {"speaker", "text", "start_s", "end_s", "kind", "interrupted", "words", "interpolated_words"}
    gaps_s: list[float]  # floor-transfer offsets: start of a turn minus end of the previous one (negative: overlap)

    @property
    def duration_s(self) -> float:
        return len(self.agent) / SAMPLE_RATE


@dataclasses.dataclass
class _Placed:
    speaker: Speaker
    utterance: Utterance
    start: int  # sample index
    kind: str = "turn"
    cut: int | None = None  # samples kept when interrupted

    @property
    def length(self) -> int:
        return self.utterance.samples.size if self.cut is None else self.cut

    @property
    def end(self) -> int:
        return self.start + self.length


def _seconds(samples: int) -> float:
    return samples / SAMPLE_RATE


def assemble(dialogue: Dialogue, persona: Persona, scenario: Scenario, tts: tp.Mapping[Speaker, SpeechSynthesizer],
             config: SpeechConfig, seed: int) -> Conversation:
    """`tts`: each channel's synthesizer (data.speech.tts.agent / .user)."""
    rng = random.Random(seed)
    voices: dict[Speaker, Voice] = {"agent": persona.voice, "user": scenario.counterpart_voice}
    pauses: dict[Speaker, tuple[int, int] | None] = {"agent": persona.pause_ms, "user": scenario.pause_ms}
    placed: list[_Placed] = []
    gaps: list[float] = []
    cursor = int(LEAD_IN_S * SAMPLE_RATE)
    limit = int(config.max_duration_s * SAMPLE_RATE)
    for turn in dialogue.turns:
        utterance = _normalised(tts[turn.speaker].speak(turn.text, voices[turn.speaker]), config.loudness_db)
        if utterance.samples.size == 0:
            continue
        if not placed:
            start = cursor
        else:
            previous = placed[-1]
            offset_s = draw_offset_s(config.timing, pauses[turn.speaker], rng)
            overlap_chance = config.overlap_probability + (
                persona.speech_patterns.interrupts if turn.speaker == "agent" else 0.0)
            if (turn.speaker == "user" and previous.speaker == "agent"
                    and _seconds(previous.length) >= BARGE_IN_MIN_TURN_S and rng.random() < config.barge_in_probability):
                start = previous.start + int(previous.length * rng.uniform(0.45, 0.75))
                previous.cut = start - previous.start + int(AGENT_REACTION_S * SAMPLE_RATE)
            else:
                if rng.random() < min(1.0, overlap_chance):  # an extra overlap: the shape's left side
                    offset_s = -abs(rng.gauss(0.0, config.timing.sigma_ms / 1000))
                # an overlap never reaches back past the middle of the turn it overlaps, nor into the
                # speaker's own previous turn
                own_end = max((p.end for p in placed if p.speaker == turn.speaker), default=0)
                start = max(previous.start + previous.length // 2, own_end, previous.end + int(offset_s * SAMPLE_RATE))
            gaps.append(_seconds(start - previous.end))
        if start >= limit:
            break
        placed.append(_Placed(turn.speaker, utterance, start))
    turns = [p for p in placed]
    for main in turns:
        if _seconds(main.length) >= BACKCHANNEL_MIN_TURN_S and rng.random() < config.backchannel_probability:
            listener: Speaker = "user" if main.speaker == "agent" else "agent"
            word = rng.choice(BACKCHANNELS)
            reply = _normalised(tts[listener].speak(word, voices[listener]), config.loudness_db - 3.0)
            at = main.start + _backchannel_point(main, rng)
            if _fits(placed, listener, at, reply.samples.size):
                placed.append(_Placed(listener, reply, at, kind="backchannel"))
    return _render(placed, gaps, limit)


def _backchannel_point(main: _Placed, rng: random.Random) -> int:
    """Samples into `main` where a listener's backchannel starts: at a pause between its words in the
    middle of the turn (where listeners give them), else at a point drawn in the middle."""
    words = [w for w in main.utterance.words if w.end_s < _seconds(main.length)]
    pauses = [a.end_s for a, b in zip(words, words[1:]) if b.start_s - a.end_s >= BACKCHANNEL_PAUSE_S
              and 0.25 <= a.end_s / _seconds(main.length) <= 0.75]
    if pauses:
        return int(rng.choice(pauses) * SAMPLE_RATE)
    return int(main.length * rng.uniform(0.35, 0.6))


def _normalised(utterance: Utterance, loudness_db: float) -> Utterance:
    return dataclasses.replace(utterance, samples=normalize_loudness(utterance.samples, loudness_db))


def _fits(placed: list[_Placed], speaker: Speaker, start: int, length: int) -> bool:
    """A backchannel must not collide with the listener's own speech."""
    return all(p.speaker != speaker or p.end <= start or p.start >= start + length for p in placed)


def _kept_words(p: _Placed) -> list[WordTiming]:
    offset = _seconds(p.start)
    kept_s = _seconds(p.length)
    return [WordTiming(w.word, offset + w.start_s, offset + min(w.end_s, kept_s), w.interpolated)
            for w in p.utterance.words if w.start_s < kept_s]


def _render(placed: list[_Placed], gaps: list[float], limit: int) -> Conversation:
    total = min(limit, max(p.end for p in placed) + int(TAIL_S * SAMPLE_RATE))
    channels = {"agent": np.zeros(total, np.float32), "user": np.zeros(total, np.float32)}
    transcript: list[dict] = []
    for p in sorted(placed, key=lambda item: item.start):
        if p.start >= total:  # a backchannel placed past the duration cap
            continue
        samples = p.utterance.samples[:p.length].copy()
        if p.cut is not None:  # fade out where the speaker stops mid-word
            fade = min(samples.size, int(FADE_S * SAMPLE_RATE))
            samples[samples.size - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        end = min(total, p.end)
        channels[p.speaker][p.start:end] += samples[:end - p.start]
        words = [w for w in _kept_words(p) if w.start_s < _seconds(total)]
        if not words:
            continue
        transcript.append({"speaker": p.speaker, "text": " ".join(w.word for w in words),
                           "start_s": round(_seconds(p.start), 3), "end_s": round(_seconds(end), 3),
                           "kind": p.kind, "interrupted": p.cut is not None,
                           "words": [[w.word, round(w.start_s, 3), round(w.end_s, 3)] for w in words],
                           "interpolated_words": sum(w.interpolated for w in words)})
    return Conversation(channels["agent"], channels["user"], transcript, gaps)
