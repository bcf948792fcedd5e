"""Words with timestamps from speech (ASR), behind one interface with two backends, chosen in config.

- `pocketsphinx` (default): CMU PocketSphinx with the English acoustic model, dictionary and language
  model its PyPI package ships. No download, CPU only, weak recognition (a third to a half of
  espeak-ng's words right) but real word times, which is what the timing metrics need most.
- `whisper`: faster-whisper (CTranslate2) with `word_timestamps=True`; weights come from the Hugging Face
  hub when first used, so it is for machines that can download (GPU workers in real runs). An optional
  extra: `pip install 'plexray[whisper]'`.

Full-Duplex-Bench used NeMo parakeet-tdt-0.6b-v2; take-over rates move by up to ~23 points between ASR
backends, so every figure must be reported with `Transcriber.name`.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import typing as tp

import numpy as np
import pydantic

from plexray.config import StrictModel
from plexray.speech.audio import SPEECH_SAMPLE_RATE, to_speech_rate
from plexray.speech.errors import BackendMissing
from plexray.speech.vad import Segment, merge_segments


@dataclasses.dataclass(frozen=True)
class Word:
    """A recognised word, seconds from the start of the track; confidence in [0, 1] where the backend gives one."""

    text: str
    start_s: float
    end_s: float
    confidence: float | None = None


class Transcriber(tp.Protocol):
    name: str  # the backend and model, reported beside every metric computed from its words

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> list[Word]:
        """Words of `samples` ([N] float in [-1, 1] at `sample_rate` Hz), in time order."""
        ...


class WhisperConfig(StrictModel):
    """faster-whisper settings (used when backend is whisper)."""

    model: str = pydantic.Field(
        "large-v3", description="faster-whisper model size (tiny.en, small.en, large-v3, ...) or a local CTranslate2 "
                                "model directory; sizes are downloaded from the hub on first use")
    device: tp.Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = pydantic.Field(
        "default", description="CTranslate2 compute type: default, float16, int8_float16, int8, float32")
    language: str | None = pydantic.Field("en", description="spoken language; None: detected per track")
    beam_size: int = pydantic.Field(5, ge=1)


class ASRConfig(StrictModel):
    """Which speech recogniser gives the words and their times."""

    backend: tp.Literal["pocketsphinx", "whisper"] = pydantic.Field(
        "pocketsphinx", description="pocketsphinx: embedded English model, no download; whisper: faster-whisper, "
                                    "weights from the hub (pip install 'plexray[whisper]')")
    whisper: WhisperConfig = WhisperConfig()


def make_transcriber(config: ASRConfig) -> Transcriber:
    """The configured backend, loaded (a model load: make one per process and reuse it)."""
    if config.backend == "pocketsphinx":
        return PocketSphinxTranscriber()
    return WhisperTranscriber(config.whisper)


def transcribe_speech(transcriber: Transcriber, samples: np.ndarray, sample_rate: int,
                      segments: tp.Sequence[Segment], *, pad_s: float = 0.25) -> list[Word]:
    """Words of `samples` ([N] float at `sample_rate` Hz) heard in `segments` (from VAD), times in the whole track.

    Each segment, widened by `pad_s` each side (segments closer than that are joined), is transcribed
    on its own. A model's track is mostly silence: PocketSphinx spends as long on silence as on speech
    (a 20 s track took 20-40 s of CPU whole), and Whisper invents words in it.
    """
    duration_s = len(samples) / sample_rate
    words: list[Word] = []
    for segment in merge_segments(segments, 2 * pad_s):
        start, end = round(max(0.0, segment.start_s - pad_s) * sample_rate), \
            round(min(duration_s, segment.end_s + pad_s) * sample_rate)
        offset_s = start / sample_rate
        words += [dataclasses.replace(word, start_s=word.start_s + offset_s, end_s=word.end_s + offset_s)
                  for word in transcriber.transcribe(samples[start:end], sample_rate)]
    return words


# PocketSphinx's segmentation marks sentence edges, silence and noise with tokens that are not words
# (<s>, </s>, <sil>, [NOISE], [SPEECH], ++GARBAGE++), and alternative pronunciations as word(2).
_NOT_A_WORD = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")
_PRONUNCIATION_VARIANT = re.compile(r"\(\d+\)$")


def pocketsphinx_decoder(loglevel: str = "ERROR"):
    """A PocketSphinx decoder with its shipped US English acoustic model, cmudict and language model."""
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise BackendMissing("the embedded ASR backend needs the pocketsphinx package: pip install pocketsphinx"
                             ) from None
    return Decoder(samprate=SPEECH_SAMPLE_RATE, loglevel=loglevel)


def pocketsphinx_words(decoder, samples: np.ndarray, sample_rate: int) -> list[Word] | None:
    """The words `decoder` finds in `samples` with its current search (recognition, or alignment of a
    known text: `speech/align.py`); None where an alignment search could not reach the end of its text.

    Callers hold the decoder alone meanwhile: it decodes one utterance at a time.
    """
    audio = to_speech_rate(samples, sample_rate)
    pcm16 = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    # Exact digital silence (a constructed track, a model's muted output) makes PocketSphinx's log
    # energies degenerate and it hears a word in it. One least significant bit of noise (its own
    # `dither`, but from a seed fixed per call: the same track always gives the same words) prevents that.
    pcm16 += np.random.default_rng(0).integers(-1, 2, size=pcm16.size, dtype=np.int16)
    # The feature front end keeps state from the previous utterance (word times moved by 10-20 ms with what
    # was decoded before): started afresh, the same audio gives the same words in any order (cost: none seen).
    decoder.reinit_feat()
    decoder.start_utt()
    decoder.process_raw(pcm16.tobytes(), full_utt=True)
    decoder.end_utt()
    segments = decoder.seg()
    if segments is None:
        return None
    frames_per_s = float(decoder.config["frate"])  # segment times are in frames (100 per second)
    return [Word(text=_PRONUNCIATION_VARIANT.sub("", segment.word),
                 start_s=segment.start_frame / frames_per_s,
                 end_s=(segment.end_frame + 1) / frames_per_s,  # end_frame is the last frame, inclusive
                 confidence=float(segment.prob))
            for segment in segments if not _NOT_A_WORD.match(segment.word)]


class PocketSphinxTranscriber:
    """PocketSphinx with its shipped US English model; one decoder per instance, one track at a time."""

    name = "pocketsphinx"

    def __init__(self):
        self._decoder = pocketsphinx_decoder()
        self._lock = threading.Lock()  # a decoder holds one utterance at a time

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> list[Word]:
        with self._lock:
            return pocketsphinx_words(self._decoder, samples, sample_rate) or []


class WhisperTranscriber:
    """faster-whisper with word timestamps; the model is loaded (downloaded if need be) on construction."""

    def __init__(self, config: WhisperConfig):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise BackendMissing("the whisper ASR backend needs faster-whisper: pip install 'plexray[whisper]' "
                                 "(or pip install faster-whisper); or set evaluation.asr.backend: pocketsphinx"
                                 ) from None
        self.name = f"whisper:{config.model}"
        self._config = config
        self._model = WhisperModel(config.model, device=config.device, compute_type=config.compute_type)

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> list[Word]:
        audio = to_speech_rate(samples, sample_rate)  # faster-whisper reads a float32 array as 16 kHz audio
        # vad_filter off: the metrics time the model's speech themselves, and Whisper's VAD would drop
        # the short backchannels they count.
        segments, _info = self._model.transcribe(audio, language=self._config.language,
                                                 beam_size=self._config.beam_size, word_timestamps=True,
                                                 vad_filter=False, condition_on_previous_text=False)
        return [Word(text=word.word.strip(), start_s=float(word.start), end_s=float(word.end),
                     confidence=float(word.probability))
                for segment in segments for word in (segment.words or []) if word.word.strip()]
