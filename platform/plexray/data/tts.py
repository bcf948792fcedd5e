"""Speech synthesis for dialogues: a TTS interface, its espeak-ng and OpenAI-compatible endpoint
implementations, with word timings from forced alignment.

Every backend speaks each turn whole (sentence prosody: words run together, pitch falls only at sentence
ends) and the word times come from forced alignment of the known text on that audio
(`plexray.speech.align`), never from the synthesizer: espeak-ng's command line reports none, a speech
endpoint none. An earlier version spoke one word at a time and joined the words with gaps: exact times,
but speech with a pause at nearly every word boundary and isolated-word intonation, which a model would
learn to imitate.

Each channel has its own synthesizer (`data.speech.tts.agent` / `.user`). An endpoint synthesizer is made
for one speaker and speaks with the endpoint voice configured for it (`voices`: persona id for the agent,
scenario id for the user's counterpart); the agent's voice sample (the voice prompt) comes from the same
synthesizer, so the training audio speaks in the voice the model is prompted with.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import re
import typing as tp
import wave

import httpx
import numpy as np
import soxr

from plexray.audio.espeak import EspeakVoice, synthesize
from plexray.data.config import SpeakerTTSConfig, SpeechEndpointConfig, TTSConfig
from plexray.data.errors import TTSError
from plexray.data.personas import Voice
from plexray.errors import ConfigError
from plexray.model.prompt import SAMPLE_RATE
from plexray.openai_compat import post
from plexray.speech.align import PocketSphinxAligner

TRIM_THRESHOLD = 0.01  # fraction of full scale below which an utterance's edges count as silence
BASE_URL_ENV = "PLEXRAY_TTS_BASE_URL"
# Content types of answers that are certainly not audio (an error page, a JSON error with status 200).
NOT_AUDIO_TYPES = ("application/json", "text/")


@dataclasses.dataclass(frozen=True)
class WordTiming:
    word: str
    start_s: float
    end_s: float
    interpolated: bool = False  # the aligner could not place it: timed between its neighbours (speech/align.py)


@dataclasses.dataclass(frozen=True)
class Utterance:
    samples: np.ndarray  # [N] float32, 24 kHz
    words: tuple[WordTiming, ...]  # relative to the first sample

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


class SpeechSynthesizer(tp.Protocol):
    def speak(self, text: str, voice: Voice) -> Utterance: ...


def split_words(text: str) -> list[str]:
    """Words with their trailing punctuation kept (as they appear in transcripts)."""
    return [w for w in re.split(r"\s+", text.strip()) if re.search(r"[\w']", w)]


def trim_silence(samples: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples) > TRIM_THRESHOLD)
    return samples[loud[0]:loud[-1] + 1] if loud.size else samples[:0]


@functools.cache
def _aligner() -> PocketSphinxAligner:
    """One aligner per process (a model load), shared by every synthesizer in it."""
    return PocketSphinxAligner()


def timed_utterance(samples: np.ndarray, words: list[str]) -> Utterance:
    """Speech of `words` ([N] float at 24 kHz), trimmed to its first and last sound, words timed by the aligner."""
    samples = trim_silence(samples)
    if not words or samples.size == 0:
        return Utterance(np.zeros(0, np.float32), ())
    alignment = _aligner().align(samples, SAMPLE_RATE, words)
    return Utterance(samples.astype(np.float32),
                     tuple(WordTiming(w.text, w.start_s, w.end_s, index in alignment.interpolated)
                           for index, w in enumerate(alignment.words)))


@functools.lru_cache(maxsize=4096)  # backchannels and the voice sample text repeat in every conversation
def _spoken(text: str, variant: str, pitch: int, rate: int) -> Utterance:
    words = split_words(text)
    return timed_utterance(synthesize(" ".join(words), EspeakVoice("en-us", variant, pitch, rate)), words)


class EspeakSynthesizer:
    def speak(self, text: str, voice: Voice) -> Utterance:
        return _spoken(text, voice.variant, voice.pitch, voice.rate)


def wav_samples(data: bytes) -> tuple[np.ndarray, int]:
    """A PCM WAV file's samples ([N] float32, channels averaged) and rate; ValueError naming what is wrong."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a PCM WAV file ({exc}); the first bytes: {data[:40]!r}") from None
    if width == 1:  # 8-bit WAV is unsigned
        pcm = (np.frombuffer(frames, np.uint8).astype(np.float32) - 128) / 128
    elif width in (2, 4):
        dtype = np.int16 if width == 2 else np.int32
        pcm = np.frombuffer(frames, dtype).astype(np.float32) / -float(np.iinfo(dtype).min)
    else:
        raise ValueError(f"WAV of {8 * width}-bit samples is not supported (8, 16 or 32-bit PCM; or response_format pcm)")
    return pcm[:pcm.size - pcm.size % channels].reshape(-1, channels).mean(axis=1), rate


def decode_speech(response: httpx.Response, config: SpeechEndpointConfig) -> np.ndarray:
    """The audio of a speech endpoint's answer: [N] float32 at 24 kHz, trimmed to its first and last sound.

    Raises ValueError (an unusable reply: `post` retries it) for an answer that is not audio, or is empty or silent.
    """
    content_type = response.headers.get("content-type", "")
    if content_type.startswith(NOT_AUDIO_TYPES):
        raise ValueError(f"not audio: Content-Type {content_type!r}: {response.text[:200]!r}")
    data = response.content
    if config.response_format == "wav":
        samples, rate = wav_samples(data)
    else:
        if len(data) % 2:
            raise ValueError(f"raw 16-bit pcm of an odd number of bytes ({len(data)}): not pcm audio")
        samples, rate = np.frombuffer(data, "<i2").astype(np.float32) / 32768, config.pcm_sample_rate
    if samples.size == 0:
        raise ValueError("empty audio (0 samples)")
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32)
    trimmed = trim_silence(samples)
    if trimmed.size == 0:
        raise ValueError(f"silent audio: {samples.size / SAMPLE_RATE:.2f} s, no sample above {TRIM_THRESHOLD} "
                         "of full scale")
    return trimmed


@functools.lru_cache(maxsize=4096)  # as espeak-ng's: repeated texts are asked for once per process
def _endpoint_spoken(text: str, voice: str, base_url: str, api_key: str, config: SpeechEndpointConfig) -> Utterance:
    words = split_words(text)
    if not words:  # nothing to say: no request (espeak-ng says nothing too)
        return Utterance(np.zeros(0, np.float32), ())
    body = {"model": config.model, "input": " ".join(words), "voice": voice,
            "response_format": config.response_format}
    samples = post(base_url, "/audio/speech", body, api_key, config,
                   lambda response: decode_speech(response, config), TTSError)
    return timed_utterance(samples, words)


class EndpointSynthesizer:
    """An OpenAI-compatible speech endpoint speaking whole sentences in one of its voices."""

    def __init__(self, config: SpeechEndpointConfig, voice: str):
        base_url = config.base_url or os.environ.get(BASE_URL_ENV)
        if not base_url:
            raise TTSError(f"no speech endpoint: set data.speech.tts.<speaker>.endpoint.base_url or ${BASE_URL_ENV}")
        self.base_url = base_url.rstrip("/")
        self.config = config
        self.voice = voice
        self.api_key = os.environ.get(config.api_key_env, "")

    def speak(self, text: str, voice: Voice) -> Utterance:
        """`voice` (the speaker's espeak-ng voice) is not used: this synthesizer speaks in its endpoint voice."""
        return _endpoint_spoken(text, self.voice, self.base_url, self.api_key, self.config)


def endpoint_voice(config: SpeakerTTSConfig, speaker_id: str) -> str | None:
    """The endpoint voice of a persona (agent) or scenario (user) id: its entry in `voices`, else `default_voice`."""
    return config.voices.get(speaker_id, config.default_voice)


def check_tts(config: TTSConfig, persona_ids: tp.Iterable[str], scenario_ids: tp.Iterable[str]) -> None:
    """Fail before any work when an endpoint channel has no endpoint, or no voice for a persona or scenario of the plan."""
    for speaker, speaker_config, ids in (("agent", config.agent, persona_ids), ("user", config.user, scenario_ids)):
        if speaker_config.backend != "endpoint":
            continue
        if not (speaker_config.endpoint.base_url or os.environ.get(BASE_URL_ENV)):
            raise ConfigError(f"data.speech.tts.{speaker}.backend is endpoint but no endpoint is given: set "
                              f"data.speech.tts.{speaker}.endpoint.base_url or ${BASE_URL_ENV}")
        missing = sorted(i for i in ids if endpoint_voice(speaker_config, i) is None)
        if missing:
            kind = "persona" if speaker == "agent" else "scenario"
            raise ConfigError(f"data.speech.tts.{speaker}.voices has no endpoint voice for {kind} id(s) {missing} "
                              f"and data.speech.tts.{speaker}.default_voice is not set")


def speaker_synthesizer(config: SpeakerTTSConfig, speaker_id: str) -> SpeechSynthesizer:
    """The synthesizer of one channel of one conversation (`speaker_id`: its persona or scenario id)."""
    if config.backend == "espeak":
        return EspeakSynthesizer()
    voice = endpoint_voice(config, speaker_id)
    if voice is None:
        raise ConfigError(f"no endpoint voice for {speaker_id!r}: add it to voices or set default_voice")
    return EndpointSynthesizer(config.endpoint, voice)


def synthesizer(name: str) -> SpeechSynthesizer:
    if name == "espeak":
        return EspeakSynthesizer()
    raise ValueError(f"unknown TTS backend {name!r}")
