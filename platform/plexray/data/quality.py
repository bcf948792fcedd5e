"""The speech-quality gate of synthetic conversations: how much of its script the aligner found in the audio.

The figure is the fraction of script words forced alignment placed in the audio (`speech/align.py`);
the others were interpolated. It costs nothing (every utterance is aligned anyway) and it separates
well: on whole-sentence espeak-ng speech 67-100% of a conversation's words are placed (40 demo-library
conversations; the aligner fails a whole turn about 1 time in 8, and leaves out words not in its
dictionary), while audio that does not say its script (another text, noise, speech cut short) fails
its alignment, so nearly none are. The embedded ASR's word-error rate (`speech/asr.py`) was the other candidate: it gets a third to
a half of good espeak-ng words wrong and costs 1-2 s of CPU per second of speech, so it neither
separates good from bad audio nor fits in the pipeline's budget.
"""

from __future__ import annotations

import typing as tp

from plexray.data.tts import WordTiming

REASON = "low_aligned_fraction"  # the reject reason's tag (data/dialogue/validate.py reason_tag)


def aligned_fraction(words: int, interpolated: int) -> float:
    """Placed words / words; 1.0 when there are no words (nothing to doubt)."""
    return 1.0 - interpolated / words if words else 1.0


def transcript_aligned_fraction(transcript: tp.Sequence[dict]) -> float:
    """The figure of a conversation's transcript (entries with `words` and `interpolated_words`)."""
    return aligned_fraction(sum(len(entry.get("words", [])) for entry in transcript),
                            sum(entry.get("interpolated_words", 0) for entry in transcript))


def speech_quality_problem(transcript: tp.Sequence[dict], voice_sample: tp.Sequence[WordTiming],
                           min_fraction: float) -> str | None:
    """Why the conversation's speech (or its voice sample: what the model is prompted with) fails the
    gate, or None."""
    conversation = transcript_aligned_fraction(transcript)
    if conversation < min_fraction:
        return (f"{REASON}: the aligner placed {conversation:.0%} of the conversation's words in its audio, "
                f"below data.speech.min_aligned_fraction={min_fraction}: the speech does not say its script")
    voice = aligned_fraction(len(voice_sample), sum(word.interpolated for word in voice_sample))
    if voice < min_fraction:
        return (f"{REASON}: the aligner placed {voice:.0%} of the voice sample's words in its audio, "
                f"below data.speech.min_aligned_fraction={min_fraction}: the voice prompt does not say its text")
    return None
