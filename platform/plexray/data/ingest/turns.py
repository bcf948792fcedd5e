"""Turns of a recorded conversation from each channel's recognised words, in the transcript format of
generated data (assembly.py): {speaker, text, start_s, end_s, kind, interrupted, words, interpolated_words}.

1. Per channel, words closer than TURN_BREAK_S (as moshi-finetune import groups them) form an utterance.
2. An utterance of at most 2 words and under 1 s that lies inside the other speaker's utterance is a
   backchannel (Full-Duplex-Bench's definition: SPEC section 7); it does not take the floor.
3. The other utterances, in time order, are the main turns; consecutive ones of the same speaker (a
   pause, no one else taking the floor) join into one turn, so the gap between two main turns is a
   floor-transfer offset, as the stats count it.
A main turn is `interrupted` when the other speaker's next turn starts more than BARGE_IN_OVERLAP_S
before it ends: the speaker was talked over and stopped.
"""

from __future__ import annotations

import dataclasses

from plexray.data.moshi_finetune import TURN_BREAK_S
from plexray.speech.asr import Word

BACKCHANNEL_MAX_WORDS = 2
BACKCHANNEL_MAX_S = 1.0
BARGE_IN_OVERLAP_S = 0.5


@dataclasses.dataclass
class _Utterance:
    speaker: str
    words: list[Word]

    @property
    def start_s(self) -> float:
        return self.words[0].start_s

    @property
    def end_s(self) -> float:
        return self.words[-1].end_s


def _utterances(speaker: str, words: list[Word]) -> list[_Utterance]:
    utterances: list[_Utterance] = []
    for word in sorted(words, key=lambda w: w.start_s):
        if utterances and word.start_s - utterances[-1].end_s < TURN_BREAK_S:
            utterances[-1].words.append(word)
        else:
            utterances.append(_Utterance(speaker, [word]))
    return utterances


def _is_backchannel(utterance: _Utterance, others: list[_Utterance]) -> bool:
    return (len(utterance.words) <= BACKCHANNEL_MAX_WORDS and utterance.end_s - utterance.start_s < BACKCHANNEL_MAX_S
            and any(other.start_s <= utterance.start_s and utterance.end_s <= other.end_s for other in others))


def _entry(utterance: _Utterance, kind: str, interrupted: bool) -> dict:
    return {"speaker": utterance.speaker, "text": " ".join(w.text for w in utterance.words),
            "start_s": round(utterance.start_s, 3), "end_s": round(utterance.end_s, 3), "kind": kind,
            "interrupted": interrupted, "interpolated_words": 0,
            "words": [[w.text, round(w.start_s, 3), round(w.end_s, 3)] for w in utterance.words]}


def conversation_turns(agent_words: list[Word], user_words: list[Word]) -> list[dict]:
    """The transcript (a list of turn entries in time order) of a conversation whose channels gave these words."""
    utterances = {"agent": _utterances("agent", agent_words), "user": _utterances("user", user_words)}
    backchannels, main = [], []
    for speaker, other in (("agent", "user"), ("user", "agent")):
        for utterance in utterances[speaker]:
            (backchannels if _is_backchannel(utterance, utterances[other]) else main).append(utterance)
    turns: list[_Utterance] = []
    for utterance in sorted(main, key=lambda u: u.start_s):
        if turns and turns[-1].speaker == utterance.speaker:
            turns[-1].words += utterance.words
        else:
            turns.append(_Utterance(utterance.speaker, list(utterance.words)))
    entries = [_entry(turn, "turn", next_turn is not None and next_turn.start_s < turn.end_s - BARGE_IN_OVERLAP_S)
               for turn, next_turn in zip(turns, turns[1:] + [None])]
    entries += [_entry(utterance, "backchannel", False) for utterance in backchannels]
    return sorted(entries, key=lambda entry: entry["start_s"])
