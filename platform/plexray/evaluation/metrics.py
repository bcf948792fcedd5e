"""Behaviour metrics of one conversation: take-over, response latency, backchannels, stop latency, voice.

Definitions follow Full-Duplex-Bench (FDB) v1 and v1.5 as SPEC section 7 records them (FDB's code is
CC BY-NC and was not read or copied); each function cites the one it implements and says where it
differs. Times are seconds from the start of the conversation; the agent track is as long as the
user track. Words come from a `Transcriber` (its name is reported with every figure: take-over rates
move by up to ~23 points between ASR backends), speech spans from Silero VAD, speaker embeddings from a
`SpeakerEncoder` (plexray.speech.speaker).

`score_conversation` is what the evaluation runner calls per conversation.
"""

from __future__ import annotations

import dataclasses
import typing as tp

import numpy as np

from plexray.evaluation.testset import TASKS
from plexray.speech.asr import Transcriber, Word, transcribe_speech
from plexray.speech.speaker import SpeakerEncoder, similarity
from plexray.speech.vad import Segment, merge_segments, speech_segments

# FDB v1 take-over: a span of words this long, or more words than this in a shorter span.
TAKE_OVER_SPAN_S = 1.0
TAKE_OVER_MIN_WORDS = 3
# FDB v1 backchannel task: an output VAD segment longer than this is a take-over ...
BACKCHANNEL_TAKE_OVER_S = 3.0
# ... and one shorter than this, with at most this many words, is a backchannel.
BACKCHANNEL_MAX_S = 1.0
BACKCHANNEL_MAX_WORDS = 2
# FDB v1.5: gaps merged before timing overlaps (a breath inside a sentence is not a stop).
USER_GAP_S = 0.6
AGENT_GAP_S = 0.5


@dataclasses.dataclass(frozen=True)
class BackchannelCount:
    backchannels: int
    take_overs: int
    rate_per_s: float  # backchannels per second of output


@dataclasses.dataclass(frozen=True)
class VoiceReference:
    """What a conversation's agent should sound like: the speaker embedding of its voice prompt's sample."""

    encoder: SpeakerEncoder
    embedding: np.ndarray  # [D], made by `encoder`
    min_speech_s: float  # less agent speech than this: not measured


def take_over(words: tp.Sequence[Word]) -> int:
    """1 if the agent took the turn in these words, else 0 (FDB v1 take-over of one output segment).

    0 without words; 1 if the last word ends at least 1 s after the first starts, or if that span is
    shorter but holds more than 3 words; otherwise 0 (a short "yeah" or "okay" is not a turn).
    """
    if not words:
        return 0
    span_s = max(word.end_s for word in words) - min(word.start_s for word in words)
    return int(span_s >= TAKE_OVER_SPAN_S or len(words) > TAKE_OVER_MIN_WORDS)


def response_latency(words: tp.Sequence[Word], reference_s: float) -> float | None:
    """Seconds from `reference_s` (the user's end of turn) to the first word's start, floored at 0; None without words.

    FDB v1 smooth turn-taking and user interruption latency. The floor makes an agent that starts a
    little before the user's end (overlap) count as immediate, not negative.
    """
    if not words:
        return None
    return max(0.0, min(word.start_s for word in words) - reference_s)


def backchannels(agent_segments: tp.Sequence[Segment], agent_words: tp.Sequence[Word],
                 output_duration_s: float) -> BackchannelCount:
    """Backchannels and take-overs of the agent during a user monologue (FDB v1 backchannel task).

    Each VAD segment of the agent: longer than 3 s is a take-over; shorter than 1 s with at most 2
    words (words overlapping the segment) is a backchannel; anything between is neither. The rate is
    backchannels per second of output. Two differences from FDB: the segments come from VAD at its
    own 16 kHz rate (FDB passed 24 kHz audio to it, stretching every segment x1.5, which turns 0.7-1 s
    utterances into non-backchannels and 2-3 s ones into take-overs); and they are merged over gaps
    of up to 0.5 s first (FDB v1.5's gap for the model's speech), so the "Well," before a comma's
    pause is part of a sentence, not a backchannel, and a long turn with pauses is one take-over.
    """
    if output_duration_s <= 0:
        raise ValueError(f"output_duration_s must be > 0, got {output_duration_s}")
    count = take_overs = 0
    for segment in merge_segments(agent_segments, AGENT_GAP_S):
        if segment.duration_s > BACKCHANNEL_TAKE_OVER_S:
            take_overs += 1
        elif segment.duration_s < BACKCHANNEL_MAX_S and \
                len(_overlapping(agent_words, segment.start_s, segment.end_s)) <= BACKCHANNEL_MAX_WORDS:
            count += 1
    return BackchannelCount(count, take_overs, count / output_duration_s)


def stop_latency(user_segments: tp.Sequence[Segment], agent_segments: tp.Sequence[Segment],
                 interruption_start_s: float, *, user_gap_s: float = USER_GAP_S,
                 agent_gap_s: float = AGENT_GAP_S) -> float | None:
    """How long the agent keeps talking over the user once the user starts interrupting (FDB v1.5 stop latency).

    Both speakers' segments are merged over short gaps (0.6 s user, 0.5 s agent, as FDB v1.5). The
    user's onset is the start of the merged user segment that holds `interruption_start_s` (or the
    first one after it). If the agent is speaking at that onset, the result is the end of that merged
    agent segment minus the onset; if it is silent then, 0.0 (nothing to stop). None when no user
    speech is at or after `interruption_start_s`. An agent that starts anew during the interruption
    is not counted here: that is a reply, timed by `response_latency`.
    """
    user = [s for s in merge_segments(user_segments, user_gap_s) if s.end_s > interruption_start_s]
    if not user:
        return None
    onset_s = user[0].start_s
    for agent in merge_segments(agent_segments, agent_gap_s):
        if agent.start_s <= onset_s < agent.end_s:
            return agent.end_s - onset_s
    return 0.0


def voice_similarity(agent_audio: np.ndarray, sample_rate: int, agent_segments: tp.Sequence[Segment],
                     voice: VoiceReference) -> float | None:
    """Cosine of the speaker embeddings of the agent's speech and of its voice prompt's sample; None with
    less than `voice.min_speech_s` of agent speech.

    PersonaPlex's voice similarity (SPEC section 7: output vs voice prompt, 0.57 for PersonaPlex). Only
    the agent's speech is embedded (its VAD segments, joined): a track that is mostly silence would
    otherwise be judged on its silence.
    """
    if sum(segment.duration_s for segment in agent_segments) < voice.min_speech_s:
        return None
    speech = np.concatenate([agent_audio[round(s.start_s * sample_rate):round(s.end_s * sample_rate)]
                             for s in agent_segments])
    return similarity(voice.encoder.embed(speech, sample_rate), voice.embedding)


def take_over_vad(segments: tp.Sequence[Segment]) -> int:
    """A VAD-only take-over, free of any ASR: 1 if the agent's speech spans at least 1 s, else 0.

    SPEC section 7 asks for a variant without ASR (ASR choice moves take-over rates by up to ~23
    points). The span is first onset to last offset, like the word span of `take_over`; the
    "more than 3 words" rule has no VAD counterpart.
    """
    if not segments:
        return 0
    return int(max(s.end_s for s in segments) - min(s.start_s for s in segments) >= TAKE_OVER_SPAN_S)


def _overlapping(words: tp.Sequence[Word], start_s: float, end_s: float) -> list[Word]:
    """Words heard at some moment of [start_s, end_s)."""
    return [word for word in words if word.end_s > start_s and word.start_s < end_s]


def _clip(segments: tp.Sequence[Segment], start_s: float, end_s: float) -> list[Segment]:
    """The parts of `segments` inside [start_s, end_s)."""
    return [Segment(max(s.start_s, start_s), min(s.end_s, end_s)) for s in segments
            if s.end_s > start_s and s.start_s < end_s]


def _turn_result(words: tp.Sequence[Word], segments: tp.Sequence[Segment], start_s: float, end_s: float) -> dict:
    """take_over (and its VAD-only twin) of the agent in [start_s, end_s); latency from start_s if it took over."""
    heard = _overlapping(words, start_s, end_s)
    took_over = take_over(heard)
    return {"take_over": took_over, "take_over_vad": take_over_vad(_clip(segments, start_s, end_s)),
            # FDB averages latency over the conversations where the agent took the turn only.
            "latency_s": response_latency(heard, start_s) if took_over else None}


def score_conversation(conversation: dict, agent_audio: np.ndarray, sample_rate: int,
                       transcriber: Transcriber, voice: VoiceReference | None = None) -> dict:
    """Behaviour metrics of one conversation: the test set's metadata dict, the agent's track, an ASR
    backend, and the voice the agent was prompted with (None: voice similarity not measured).

    `agent_audio` is [N] float in [-1, 1] at `sample_rate` Hz, starting with the user track. The track is
    voice-detected once and its speech transcribed once; each task then looks at a window of it.
    Returned, always: id, task, asr_backend, agent_words (dicts of plexray.speech.asr.Word),
    agent_speech_s (seconds of agent speech by VAD), voice_similarity (`voice_similarity`, or None). Then
    per task (None: not measurable in this conversation):

    - pause_handling: `take_over` (lower is better) of the agent's words heard from the pause's start
      until the user's resumed sentence ends. FDB scores the whole output; after the user has finished
      the sentence, answering is right, so those words are left out here. Also `take_over_vad`.
    - turn_taking: `take_over` (higher is better) of the words heard after `end_of_turn_s`, and
      `latency_s` from it to the first of them, when take_over is 1. Also `take_over_vad`.
    - interruption: `take_over` and `latency_s` after the interruption's end (the agent should answer
      the new topic); `stop_latency_s`: how long the agent kept talking over the interruption.
    - user_backchannel: per user backchannel ("mhm" over the agent's answer), how long the agent kept
      talking from its onset (the agent should go on). `stop_latency_s`: the shortest of these (the
      agent's quickest stop); `yielded`: 1 if the agent stopped at any backchannel, that is its speech
      ended before the backchannel's end + 0.5 s (the agent's merge gap), 0 if it talked through all;
      both None when the agent was silent at every backchannel onset.
    - backchannel (a user monologue): `backchannels`, `backchannel_take_overs`, `backchannel_rate`
      (per second of output) over the whole track, as FDB.
    - role: `answer_transcript`, the agent's words heard after the question ends (`end_of_turn_s`),
      for the judge; `take_over` and `latency_s` of that answer.
    """
    task = conversation["task"]
    if task not in TASKS:
        raise ValueError(f"conversation {conversation['id']!r}: unknown task {task!r}; expected one of {TASKS}")
    segments = speech_segments(agent_audio, sample_rate)  # checks the audio: [N] finite floats, N > 0
    duration_s = len(agent_audio) / sample_rate
    words = transcribe_speech(transcriber, agent_audio, sample_rate, segments)
    result = {"id": conversation["id"], "task": task, "asr_backend": transcriber.name,
              "agent_words": [dataclasses.asdict(word) for word in words],
              "agent_speech_s": sum(s.duration_s for s in segments),
              "voice_similarity": voice_similarity(agent_audio, sample_rate, segments, voice) if voice else None}

    if task == "pause_handling":
        pause = conversation["pause"]
        resumed = [t["end_s"] for t in conversation["user_turns"] if t["end_s"] >= pause["end_s"]]
        window_end_s = min(resumed) if resumed else duration_s
        turn = _turn_result(words, segments, pause["start_s"], window_end_s)
        result.update(take_over=turn["take_over"], take_over_vad=turn["take_over_vad"])
    elif task in ("turn_taking", "role"):
        result.update(_turn_result(words, segments, conversation["end_of_turn_s"], duration_s))
        if task == "role":
            heard = _overlapping(words, conversation["end_of_turn_s"], duration_s)
            result["answer_transcript"] = " ".join(word.text for word in heard)
    elif task == "interruption":
        interruption = conversation["interruption"]
        result.update(_turn_result(words, segments, interruption["end_s"], duration_s))
        user_segments = [Segment(turn["start_s"], turn["end_s"]) for turn in conversation["user_turns"]]
        result["stop_latency_s"] = stop_latency(user_segments, segments, interruption["start_s"])
    elif task == "user_backchannel":
        result.update(_yielding(conversation["user_backchannels"], segments))
    else:  # backchannel
        count = backchannels(segments, words, duration_s)
        result.update(backchannels=count.backchannels, backchannel_take_overs=count.take_overs,
                      backchannel_rate=count.rate_per_s)
    return result


def _yielding(user_backchannels: tp.Sequence[dict], agent_segments: tp.Sequence[Segment]) -> dict:
    """stop_latency_s and yielded of the user_backchannel task (see score_conversation)."""
    went_on_s: list[float] = []  # per backchannel heard over the agent's speech: how long the agent went on
    yielded: list[bool] = []
    for backchannel in user_backchannels:
        # Only the backchannel itself is the user's speech here: merging over 0.6 s could join it to
        # the question before and move the onset back.
        user = [Segment(backchannel["start_s"], backchannel["end_s"])]
        went_on = stop_latency(user, agent_segments, backchannel["start_s"])
        if not went_on:  # 0.0: the agent was silent at the backchannel's onset, nothing to yield
            continue
        went_on_s.append(went_on)
        yielded.append(went_on < user[0].duration_s + AGENT_GAP_S)
    if not went_on_s:
        return {"stop_latency_s": None, "yielded": None}
    return {"stop_latency_s": min(went_on_s), "yielded": int(any(yielded))}
