"""espeak-ng speech with word timings, and two-channel assembly."""

import numpy as np

from plexray.data.assembly import assemble
from plexray.data.config import SpeechConfig
from plexray.data.dialogue.embedded import EmbeddedBackend
from plexray.data.personas import Voice, load_library
from plexray.data.tts import EspeakSynthesizer
from plexray.model.prompt import SAMPLE_RATE

LIBRARY = load_library()
ESPEAK_BOTH = {"agent": EspeakSynthesizer(), "user": EspeakSynthesizer()}


def _rms(samples):
    return float(np.sqrt(np.mean(np.square(samples)))) if samples.size else 0.0


def test_espeak_speech_has_the_right_length_and_is_not_silence():
    utterance = EspeakSynthesizer().speak("Could I get a large oat milk latte, please?", Voice())
    words = utterance.words
    assert [w.word for w in words] == ["Could", "I", "get", "a", "large", "oat", "milk", "latte,", "please?"]
    assert 1.5 < utterance.duration_s < 8.0  # nine words of speech
    assert all(a.end_s <= b.start_s for a, b in zip(words, words[1:]))  # ordered, no overlap
    # spoken whole and trimmed: the aligned words cover it, to the aligner's 10 ms frame
    assert words[0].start_s <= 0.01 and abs(words[-1].end_s - utterance.duration_s) <= 0.01
    for word in words:  # each timed span holds speech
        span = utterance.samples[int(word.start_s * SAMPLE_RATE):int(word.end_s * SAMPLE_RATE)]
        assert _rms(span) > 0.02


def test_voices_differ_per_persona_and_are_stable():
    tts = EspeakSynthesizer()
    text = "I would like a coffee."
    alex = tts.speak(text, LIBRARY.personas["angry-alex"].voice).samples
    nancy = tts.speak(text, LIBRARY.personas["nervous-nancy"].voice).samples
    assert alex.size != nancy.size or not np.allclose(alex, nancy)
    assert np.array_equal(alex, tts.speak(text, LIBRARY.personas["angry-alex"].voice).samples)


def test_assembly_two_channels_with_full_duplex_events():
    persona, scenario = LIBRARY.personas["angry-alex"], LIBRARY.scenarios["wrong-order"]
    dialogue = EmbeddedBackend().write(persona, scenario, 5, 6, 6, "agent")
    config = SpeechConfig(barge_in_probability=1.0, backchannel_probability=1.0, loudness_db=-20.0)
    conversation = assemble(dialogue, persona, scenario, ESPEAK_BOTH, config, seed=5)
    assert conversation.agent.shape == conversation.user.shape
    turns = [t for t in conversation.transcript if t["kind"] == "turn"]
    assert [t["speaker"] for t in turns] == ["agent", "user"] * 3
    # every user reply to a long agent turn barges in: the agent is cut, and the turns overlap
    interrupted = [t for t in turns if t["interrupted"]]
    assert interrupted and all(t["speaker"] == "agent" for t in interrupted)
    assert min(conversation.gaps_s) < 0
    assert any(t["kind"] == "backchannel" for t in conversation.transcript)
    # both channels carry speech at the normalised level, each where its transcript says
    for turn in turns:
        channel = conversation.agent if turn["speaker"] == "agent" else conversation.user
        span = channel[int(turn["start_s"] * SAMPLE_RATE):int(turn["end_s"] * SAMPLE_RATE)]
        assert _rms(span) > 0.01
        assert turn["words"][0][1] >= turn["start_s"] - 1e-3 and turn["words"][-1][2] <= turn["end_s"] + 1e-3


def test_offsets_follow_the_persona_pause_range_and_the_natural_shape():
    persona, scenario = LIBRARY.personas["hesitant-harold"], LIBRARY.scenarios["payment-trouble"]
    config = SpeechConfig(barge_in_probability=0.0, backchannel_probability=0.0)
    agent, user = [], []
    for seed in range(4):
        dialogue = EmbeddedBackend().write(persona, scenario, seed, 8, 8, "agent")
        gaps = assemble(dialogue, persona, scenario, ESPEAK_BOTH, config, seed=seed).gaps_s
        user += gaps[0::2]  # offsets before user turns (turns 1, 3, ...): the scenario has no pause range
        agent += gaps[1::2]  # before agent turns: hesitant Harold's 480-1200 ms
    low, high = persona.pause_ms
    assert low / 1000 <= np.median(agent) <= high / 1000
    assert np.median(agent) > np.median(user) + 0.2
    assert any(0 <= gap < 0.2 for gap in user)  # natural timing: quick answers, which uniform 200-700 ms never gave
