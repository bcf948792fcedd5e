"""Who is speaking: speaker embeddings, for the voice similarity of a model's speech to its voice prompt.

One backend today, chosen in config so others can join:

- `resemblyzer`: the GE2E speaker encoder of Resemblyzer (Apache-2.0; a 3-layer LSTM over 40-band mel
  frames at 16 kHz, 256-d embeddings, L2-normed), whose weights ship inside its PyPI package: no
  download. Its own preprocessing (volume normalisation, webrtcvad trimming of long silences) and its
  own utterance embedding (mean of 1.6 s partials) are used as the library does them: an embedding is
  only comparable with embeddings made the same way.

PersonaPlex reports voice similarity as the cosine of speaker embeddings of the output and of the voice
prompt (0.57 for PersonaPlex; SPEC section 7), with an encoder it does not name: compare figures from
one backend only, and report its name with every figure (`SpeakerEncoder.name`).
"""

from __future__ import annotations

import functools
import threading
import typing as tp
import warnings

import numpy as np
import pydantic

from plexray.config import StrictModel
from plexray.speech.audio import to_speech_rate
from plexray.speech.errors import BackendMissing


class SpeakerConfig(StrictModel):
    """Which speaker encoder measures voice similarity."""

    backend: tp.Literal["resemblyzer", "none"] = pydantic.Field(
        "resemblyzer", description="resemblyzer: GE2E encoder shipped in its package, no download; "
                                   "none: voice similarity not measured")
    min_speech_s: float = pydantic.Field(
        1.0, gt=0, description="less speech than this (by VAD) in a conversation: its similarity is not measured")


class SpeakerEncoder(tp.Protocol):
    name: str

    def embed(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """[D] unit-norm embedding of the speech in `samples` ([N] float in [-1, 1] at `sample_rate` Hz)."""
        ...


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two speaker embeddings, in [-1, 1] (GE2E's are non-negative: [0, 1])."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@functools.cache
def _resemblyzer() -> tuple[tp.Any, tp.Callable[[np.ndarray], np.ndarray]]:
    """(Resemblyzer's VoiceEncoder on the CPU, its preprocess_wav), loaded once per process."""
    try:
        with warnings.catch_warnings():  # it imports binary_dilation from a SciPy namespace deprecated in 1.8
            warnings.simplefilter("ignore", DeprecationWarning)
            from resemblyzer import VoiceEncoder, preprocess_wav
    except ImportError:
        raise BackendMissing("voice similarity needs the resemblyzer package: pip install resemblyzer "
                             "(or set evaluation.speaker.backend: none)") from None
    return VoiceEncoder(device="cpu", verbose=False), preprocess_wav


class ResemblyzerEncoder:
    name = "resemblyzer-ge2e"

    def __init__(self):
        self._encoder, self._preprocess = _resemblyzer()
        self._lock = threading.Lock()  # one model per process; the evaluation runs one conversation at a time

    def embed(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        # to_speech_rate gives 16 kHz, the rate Resemblyzer's encoder was trained at (its hparams.sampling_rate)
        speech = self._preprocess(to_speech_rate(samples, sample_rate))
        if speech.size == 0:
            raise ValueError("no speech left after the encoder's silence trimming")
        with self._lock:
            return self._encoder.embed_utterance(speech.astype(np.float32))


def make_speaker_encoder(config: SpeakerConfig) -> SpeakerEncoder | None:
    """The configured backend, loaded (make one per process and reuse it); None when switched off."""
    return None if config.backend == "none" else ResemblyzerEncoder()

