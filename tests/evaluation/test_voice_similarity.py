"""Voice similarity on tracks whose answer is known by construction: the demo checkpoint's voices are
espeak-ng voices, so an agent track spoken by the prompted voice must score above tracks spoken by the
others; too little speech is not measured; and the embedding is Resemblyzer's own."""

from __future__ import annotations

import numpy as np
import pytest

from plexray.audio.espeak import synthesize
from plexray.evaluation.metrics import VoiceReference, voice_similarity
from plexray.evaluation.workers import voice_references
from plexray.model import load_model
from plexray.model.demo import DEMO_VOICES, VOICE_SAMPLE_TEXT
from plexray.speech.speaker import ResemblyzerEncoder, similarity
from plexray.speech.vad import speech_segments

RATE = 24_000
# Other words than the voice sample's, between silences, as an agent's answers sit in a conversation.
ANSWERS = ["I would like a large coffee with oat milk, and a blueberry muffin please.",
           "Our store opens at seven in the morning and closes at nine in the evening."]


@pytest.fixture(scope="module")
def encoder() -> ResemblyzerEncoder:
    return ResemblyzerEncoder()


def agent_track(voice, lines=ANSWERS, gap_s: float = 1.5) -> np.ndarray:
    gap = np.zeros(int(gap_s * RATE), np.float32)
    return np.concatenate([part for line in lines for part in (gap, synthesize(line, voice))] + [gap])


def test_the_prompted_voice_scores_above_every_other_voice(encoder):
    prompted = "NATF0"
    reference = VoiceReference(encoder, encoder.embed(synthesize(VOICE_SAMPLE_TEXT, DEMO_VOICES[prompted]), RATE),
                               min_speech_s=1.0)
    scores = {}
    for name, voice in DEMO_VOICES.items():
        track = agent_track(voice)
        scores[name] = voice_similarity(track, RATE, speech_segments(track, RATE), reference)
    assert scores[prompted] > 0.85, scores
    assert all(scores[prompted] > score + 0.1 for name, score in scores.items() if name != prompted), scores


def test_too_little_speech_is_not_measured(encoder):
    reference = VoiceReference(encoder, encoder.embed(synthesize(VOICE_SAMPLE_TEXT, DEMO_VOICES["NATM0"]), RATE),
                               min_speech_s=1.0)
    short = agent_track(DEMO_VOICES["NATM0"], lines=["Yes."])
    segments = speech_segments(short, RATE)
    assert 0 < sum(s.duration_s for s in segments) < 1.0
    assert voice_similarity(short, RATE, segments, reference) is None
    silent = np.zeros(3 * RATE, np.float32)
    assert voice_similarity(silent, RATE, speech_segments(silent, RATE), reference) is None


def test_embeddings_are_resemblyzers_own(encoder):
    """The library's documented path (its preprocess_wav resampling with librosa, then embed_utterance) and
    ours (plexray's 16 kHz resampling) embed the same speech alike."""
    from resemblyzer import VoiceEncoder, preprocess_wav

    speech = synthesize(" ".join(ANSWERS), DEMO_VOICES["VARM0"])
    theirs = VoiceEncoder(device="cpu", verbose=False).embed_utterance(preprocess_wav(speech, source_sr=RATE))
    ours = encoder.embed(speech, RATE)
    assert ours.shape == theirs.shape == (256,)
    assert similarity(ours, theirs) > 0.99


def test_voices_without_a_sample_have_no_reference(encoder, demo_checkpoint):
    """A voice given only as NVIDIA's prefill (.pt) has no audio to compare with: it gets no reference."""
    bundle = load_model(str(demo_checkpoint))
    only_prefill = bundle.voices["VARF0"]
    only_prefill.wav_path = None
    references = voice_references(bundle, encoder, ["NATF0", "VARF0"], min_speech_s=1.0)
    assert set(references) == {"NATF0"}
    assert similarity(references["NATF0"].embedding, encoder.embed(bundle.voices["NATF0"].load_wav(), RATE)) > 0.999
