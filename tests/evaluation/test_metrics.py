"""Behaviour metrics: the definitions on word and segment lists, then whole conversations on constructed tracks.

The constructed tracks place espeak-ng speech at known times in a silent 24 kHz agent track against a
user track known from its metadata, so every metric's answer is known by construction. They are
scored with the real VAD and the embedded ASR (pocketsphinx): times are compared within the VAD's
tolerance (constructed_tracks.VAD_TOLERANCE_S) or the ASR's (0.1 s).
"""

import numpy as np
import pytest

from plexray.evaluation.metrics import (BackchannelCount, backchannels, response_latency, score_conversation,
                                        stop_latency, take_over, take_over_vad)
from plexray.speech.asr import ASRConfig, Word, make_transcriber
from plexray.speech.errors import SpeechError
from plexray.speech.vad import Segment

from constructed_tracks import RATE, VAD_TOLERANCE_S, place

ASR_TOLERANCE_S = 0.1
# Spoken word by word by espeak-ng's m3 voice: without pauses longer than 45 ms inside.
ANSWER = "I think the best thing to do is to read a good book by the window."  # 3.3 s, spoken whole
MEDIUM = "Read a good book by the window."  # 1.5 s
SHORT = "Sure thing."  # 0.8 s


def _words(*spans: tuple[float, float]) -> list[Word]:
    return [Word(f"w{i}", start_s, end_s) for i, (start_s, end_s) in enumerate(spans)]


# Definitions on lists ------------------------------------------------------------------------------------

def test_take_over_needs_a_second_of_words_or_more_than_three_words():
    assert take_over([]) == 0
    assert take_over(_words((2.0, 2.3))) == 0  # "yeah"
    assert take_over(_words((2.0, 2.3), (2.4, 2.9))) == 0  # two words in 0.9 s
    assert take_over(_words((2.0, 2.5), (2.6, 3.0))) == 1  # exactly 1 s
    assert take_over(_words((2.0, 2.1), (2.1, 2.2), (2.2, 2.3), (2.3, 2.4))) == 1  # 4 quick words
    assert take_over(_words((2.0, 2.1), (2.1, 2.2), (2.2, 2.3))) == 0  # 3 quick words


def test_response_latency_is_floored_at_zero():
    assert response_latency([], 3.0) is None
    assert response_latency(_words((3.4, 3.8), (3.9, 4.2)), 3.0) == pytest.approx(0.4)
    assert response_latency(_words((2.8, 3.1)), 3.0) == 0.0  # started before the user's end


def test_backchannels_are_short_segments_with_few_words():
    segments = [Segment(1.0, 1.4), Segment(5.0, 9.0), Segment(12.0, 12.8), Segment(15.0, 17.0),
                Segment(20.0, 20.5), Segment(20.7, 21.0)]
    words = _words((1.0, 1.4), (5.0, 5.5), (12.0, 12.2), (12.2, 12.4), (12.4, 12.8), (20.0, 20.5))
    # 1.0-1.4: a backchannel; 5-9: a take-over; 12.0-12.8: three words, neither; 15-17: neither;
    # 20.0-21.0: one segment after the 0.2 s gap is merged, 1 s long: neither.
    assert backchannels(segments, words, 40.0) == BackchannelCount(1, 1, 1 / 40)
    assert backchannels([Segment(1.0, 1.4)], [], 10.0) == BackchannelCount(1, 0, 0.1)  # "mhm": no words
    with pytest.raises(ValueError, match="output_duration_s"):
        backchannels(segments, words, 0.0)


def test_stop_latency_is_how_long_the_agent_talks_over_the_interruption():
    user = [Segment(0.5, 2.0), Segment(6.0, 6.8), Segment(7.2, 8.0)]  # question; interruption with a 0.4 s gap
    # The agent answers from 2.5 with a 0.3 s breath at 5.0 (merged) and stops at 6.9.
    agent = [Segment(2.5, 5.0), Segment(5.3, 6.9), Segment(9.0, 11.0)]
    assert stop_latency(user, agent, 6.0) == pytest.approx(0.9)
    assert stop_latency(user, agent, 6.3) == pytest.approx(0.9)  # the onset is where the merged user speech starts
    assert stop_latency(user, [Segment(2.5, 5.5)], 6.0) == 0.0  # silent already
    assert stop_latency(user, agent, 8.5) is None  # no user speech after
    assert take_over_vad([]) == 0 and take_over_vad([Segment(1.0, 1.5), Segment(1.8, 2.0)]) == 1


# Whole conversations on constructed tracks ---------------------------------------------------------------

@pytest.fixture(scope="module")
def transcriber():
    return make_transcriber(ASRConfig(backend="pocketsphinx"))


def _conversation(task: str, duration_s: float, user_turns: list[tuple[float, float]], **fields) -> dict:
    return {"id": f"{task}-0", "task": task, "duration_s": duration_s, "end_of_turn_s": None, "pause": None,
            "interruption": None, "user_backchannels": [], "role": None,
            "user_turns": [{"start_s": s, "end_s": e, "text": "..."} for s, e in user_turns], **fields}


def test_turn_taking_answer_latency(transcriber):
    track, (answer,) = place([(ANSWER, 3.1)], 9.0)
    conversation = _conversation("turn_taking", 9.0, [(0.5, 2.5)], end_of_turn_s=2.5)
    result = score_conversation(conversation, track, RATE, transcriber)
    assert result["id"] == "turn_taking-0" and result["asr_backend"] == "pocketsphinx"
    assert result["take_over"] == 1 and result["take_over_vad"] == 1
    assert abs(result["latency_s"] - (answer.start_s - 2.5)) <= ASR_TOLERANCE_S
    assert abs(result["agent_speech_s"] - answer.duration_s) <= 2 * VAD_TOLERANCE_S
    assert all(set(word) == {"text", "start_s", "end_s", "confidence"} for word in result["agent_words"])


def test_turn_taking_silence_and_a_backchannel_are_not_a_turn(transcriber):
    conversation = _conversation("turn_taking", 6.0, [(0.5, 2.5)], end_of_turn_s=2.5)
    silent = score_conversation(conversation, np.zeros(6 * RATE, np.float32), RATE, transcriber)
    assert (silent["take_over"], silent["take_over_vad"], silent["latency_s"]) == (0, 0, None)
    assert silent["agent_words"] == [] and silent["agent_speech_s"] == 0
    track, _ = place([("Yeah.", 3.0)], 6.0)
    short = score_conversation(conversation, track, RATE, transcriber)
    assert (short["take_over"], short["take_over_vad"], short["latency_s"]) == (0, 0, None)


def test_pause_handling_counts_speech_in_the_pause_not_the_answer_after(transcriber):
    # The user: "... we could" until 2.0, a 0.5 s pause, "... a picnic" until 4.0.
    conversation = _conversation("pause_handling", 11.0, [(0.5, 2.0), (2.5, 4.0)],
                                 pause={"start_s": 2.0, "end_s": 2.5})
    waits, _ = place([(ANSWER, 4.6)], 11.0)  # answers after the sentence is complete: right
    assert score_conversation(conversation, waits, RATE, transcriber)["take_over"] == 0
    jumps_in, _ = place([(ANSWER, 2.1)], 11.0)  # takes the turn in the pause
    result = score_conversation(conversation, jumps_in, RATE, transcriber)
    assert (result["take_over"], result["take_over_vad"]) == (1, 1)


def test_interruption_stop_latency_and_answer_latency(transcriber):
    # The user asks (0.3-1.5), the agent answers from 3.0, the user interrupts 0.8 s before the agent's
    # sentence ends and goes on 0.5 s past it; the agent finishes its sentence, then answers the new
    # topic 0.7 s after the user stops. (Times follow the sentence's spoken length.)
    _, (spoken,) = place([(MEDIUM, 3.0)], 13.0)
    interruption = {"start_s": round(spoken.end_s - 0.8, 2), "end_s": round(spoken.end_s + 0.5, 2)}
    track, (first, second) = place([(MEDIUM, 3.0), (ANSWER, interruption["end_s"] + 0.7)], 13.0)
    conversation = _conversation("interruption", 13.0, [(0.3, 1.5), (interruption["start_s"], interruption["end_s"])],
                                 interruption=interruption, end_of_turn_s=interruption["end_s"])
    result = score_conversation(conversation, track, RATE, transcriber)
    assert abs(result["stop_latency_s"] - (first.end_s - interruption["start_s"])) <= VAD_TOLERANCE_S
    # The answer after the interruption: words heard from its end on (the first sentence ended before).
    assert result["take_over"] == 1
    assert abs(result["latency_s"] - (second.start_s - interruption["end_s"])) <= ASR_TOLERANCE_S


def test_user_backchannels_the_agent_talks_through_or_yields_to(transcriber):
    backchannel_spans = [(4.0, 4.4), (6.0, 6.4)]
    conversation = _conversation("user_backchannel", 14.0, [(0.3, 1.5), *backchannel_spans],
                                 user_backchannels=[{"start_s": s, "end_s": e, "text": "mhm"}
                                                    for s, e in backchannel_spans])
    talks_on, (answer,) = place([(ANSWER + " " + ANSWER, 2.0)], 14.0)
    result = score_conversation(conversation, talks_on, RATE, transcriber)
    assert result["yielded"] == 0
    assert abs(result["stop_latency_s"] - (answer.end_s - 6.0)) <= VAD_TOLERANCE_S  # the shortest: from the last
    yields, (stopped, _) = place([("I think the best thing", 2.9), (ANSWER, 8.0)], 14.0)
    assert 4.0 < stopped.end_s < 4.4, stopped  # stops during the first backchannel
    result = score_conversation(conversation, yields, RATE, transcriber)
    assert result["yielded"] == 1
    assert abs(result["stop_latency_s"] - (stopped.end_s - 4.0)) <= VAD_TOLERANCE_S
    silent = score_conversation(conversation, np.zeros(14 * RATE, np.float32), RATE, transcriber)
    assert silent["yielded"] is None and silent["stop_latency_s"] is None


def test_backchannel_counts_and_rate(transcriber):
    # Over a user monologue: two backchannels, one take-over (over 3 s) and one sentence of 1-3 s (neither).
    duration_s = 20.0
    track, spans = place([("Yeah.", 1.5), ("Right.", 4.0), (ANSWER, 7.0), ("That is a good point", 14.0)],
                         duration_s)
    assert spans[2].duration_s > 3.0 + VAD_TOLERANCE_S and 1.0 < spans[3].duration_s < 3.0, spans
    conversation = _conversation("backchannel", duration_s, [(0.2, 19.0)])
    result = score_conversation(conversation, track, RATE, transcriber)
    assert (result["backchannels"], result["backchannel_take_overs"]) == (2, 1)
    assert result["backchannel_rate"] == pytest.approx(2 / duration_s)


def test_role_answer_transcript_is_what_the_agent_said_after_the_question(transcriber):
    conversation = _conversation("role", 9.0, [(0.5, 2.0)], end_of_turn_s=2.0,
                                 role={"question_type": "name", "question": "What is your name?",
                                       "expected": "Says Alex."})
    track, _ = place([("Yeah.", 0.8), (ANSWER, 2.6)], 9.0)  # a backchannel during the question, then the answer
    result = score_conversation(conversation, track, RATE, transcriber)
    answer_words = [w for w in result["agent_words"] if w["end_s"] > 2.0]
    assert len(answer_words) >= 5 and result["answer_transcript"] == " ".join(w["text"] for w in answer_words)
    assert result["take_over"] == 1
    silent = score_conversation(conversation, np.zeros(9 * RATE, np.float32), RATE, transcriber)
    assert silent["answer_transcript"] == "" and silent["take_over"] == 0


def test_bad_input_is_refused(transcriber):
    conversation = _conversation("turn_taking", 1.0, [(0.1, 0.5)], end_of_turn_s=0.5)
    with pytest.raises(SpeechError, match="NaN"):
        score_conversation(conversation, np.full(RATE, np.nan, np.float32), RATE, transcriber)
    with pytest.raises(ValueError, match="unknown task 'dancing'"):
        score_conversation(dict(conversation, task="dancing"), np.zeros(RATE, np.float32), RATE, transcriber)
