"""Speech synthesis with espeak-ng: deterministic, offline, and distinct voices per speaker."""

from __future__ import annotations

import dataclasses
import io
import shutil
import subprocess
import wave

import numpy as np
import sphn

from plexray.errors import PlexrayError

SAMPLE_RATE = 24000


@dataclasses.dataclass(frozen=True)
class EspeakVoice:
    """An espeak-ng voice: language, variant (e.g. f3, m2), pitch 0-99 and speed in words per minute."""

    language: str = "en-us"
    variant: str = "m3"
    pitch: int = 50
    speed: int = 165

    @property
    def flag(self) -> str:
        return f"{self.language}+{self.variant}" if self.variant else self.language


def espeak_binary() -> str:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise PlexrayError("espeak-ng is not installed: install the Debian/Ubuntu package 'espeak-ng' "
                           "(apt-get install espeak-ng)")
    return binary


def synthesize(text: str, voice: EspeakVoice = EspeakVoice()) -> np.ndarray:
    """Speak `text`; returns mono float32 samples at 24 kHz."""
    if not text.strip():
        return np.zeros(0, dtype=np.float32)
    command = [espeak_binary(), "--stdout", "-v", voice.flag, "-p", str(voice.pitch), "-s", str(voice.speed),
               "--", text]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        raise PlexrayError(f"espeak-ng failed for voice {voice.flag}: {result.stderr.decode(errors='replace')}")
    with wave.open(io.BytesIO(result.stdout)) as wav:
        rate = wav.getframerate()
        pcm16 = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    samples = pcm16.astype(np.float32) / 32768.0
    return np.asarray(sphn.resample(samples, rate, SAMPLE_RATE), dtype=np.float32)
