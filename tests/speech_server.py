"""A local OpenAI-compatible speech server for tests and benchmarks: it speaks with espeak-ng.

`SpeechServer` answers POST /v1/audio/speech as vLLM or Kokoro-FastAPI do: a WAV file (at `wav_rate`:
the tests ask for a rate other than the model's, so the backend must resample) or raw 16-bit pcm at
24 kHz, in the espeak-ng voice its `voice` name stands for (`VOICES`). Some names misbehave, so tests
can provoke each failure: `broken` answers HTTP 500, `chatty` a JSON error with status 200, `mute` a
WAV of silence, `mumbler` real speech of another text (`MUMBLED`). An unknown voice gets HTTP 400.
"""

from __future__ import annotations

import io
import threading
import wave

import numpy as np

from plexray.audio.espeak import EspeakVoice, synthesize
from plexray.model.prompt import SAMPLE_RATE

from openai_stub import OpenAICompatibleServer

VOICES = {"alex": EspeakVoice("en-us", "m3", 35, 175), "barista": EspeakVoice("en-us", "f2", 55, 170)}
MISBEHAVING = ("broken", "chatty", "mute", "mumbler")
MUMBLED = "The weather has been terrible all week and the trains are late again."


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """[N] float samples as a 16-bit mono PCM WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return buffer.getvalue()


def stand_in_speech(text: str, voice: str) -> np.ndarray:
    """What the server says for `text` in `voice`: [N] float32 at 24 kHz (espeak-ng)."""
    return synthesize(MUMBLED if voice == "mumbler" else text, VOICES.get(voice, VOICES["alex"]))


class SpeechServer:
    """POST /v1/audio/speech on 127.0.0.1, answered with espeak-ng speech; records every request. A context manager."""

    def __init__(self, wav_rate: int = 22050):
        self.wav_rate = wav_rate
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = OpenAICompatibleServer(self.answer)
        self.base_url = self._server.base_url

    def answer(self, path: str, body: dict) -> tuple[int, dict | str | bytes]:
        with self._lock:
            self.requests.append(body)
        if path != "/v1/audio/speech":
            return 404, {"error": f"no route {path}"}
        voice = body["voice"]
        if voice == "broken":
            return 500, "upstream exploded"
        if voice == "chatty":
            return 200, {"error": {"message": "voice is warming up"}}
        if voice not in VOICES and voice not in MISBEHAVING:
            return 400, {"error": f"unknown voice {voice!r}"}
        samples = np.zeros(SAMPLE_RATE, np.float32) if voice == "mute" else stand_in_speech(body["input"], voice)
        if body["response_format"] == "pcm":
            return 200, (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
        if self.wav_rate != SAMPLE_RATE:  # plain interpolation: the server's resampling is not under test
            samples = np.interp(np.arange(0, samples.size, SAMPLE_RATE / self.wav_rate), np.arange(samples.size),
                                samples)
        return 200, wav_bytes(samples, self.wav_rate)

    def close(self) -> None:
        self._server.close()

    def __enter__(self) -> "SpeechServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
