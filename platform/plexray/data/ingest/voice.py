"""The voice prompt of a recording that comes without one: a stretch of the agent's own channel.

The window of data.ingest.voice_prompt_s (about 10 s, as PersonaPlex's voice prompts) that starts where
the agent starts speaking and holds the most agent speech while the user is silent (a clean sample of
the voice: no crosstalk bleeding in, no laughing over the other side); it ends at the last agent speech
in it, so the prompt does not trail off in silence. The clip stays in the conversation too: the
recording's timing is kept as it is.
"""

from __future__ import annotations

from plexray.speech.vad import Segment


def _overlap_s(segment: Segment, start_s: float, end_s: float) -> float:
    return max(0.0, min(segment.end_s, end_s) - max(segment.start_s, start_s))


def clean_speech(agent: list[Segment], user: list[Segment]) -> list[Segment]:
    """The parts of the agent's segments during which the user is silent."""
    clean: list[Segment] = []
    for segment in agent:
        start_s = segment.start_s
        for other in sorted(user, key=lambda s: s.start_s):
            if other.end_s <= start_s or other.start_s >= segment.end_s:
                continue
            if other.start_s > start_s:
                clean.append(Segment(start_s, other.start_s))
            start_s = max(start_s, other.end_s)
        if start_s < segment.end_s:
            clean.append(Segment(start_s, segment.end_s))
    return clean


def voice_window(agent: list[Segment], user: list[Segment], length_s: float) -> Segment | None:
    """Where to cut the voice prompt from the agent channel (seconds), or None when the agent never speaks alone."""
    clean = clean_speech(agent, user)
    best: tuple[float, Segment] | None = None
    for first in clean:  # ties: the earliest window wins
        window_end = first.start_s + length_s
        speech_s = sum(_overlap_s(segment, first.start_s, window_end) for segment in clean)
        if best is None or speech_s > best[0] + 1e-9:
            last_end = max(min(segment.end_s, window_end) for segment in clean if segment.start_s < window_end
                           and segment.end_s > first.start_s)
            best = (speech_s, Segment(first.start_s, last_end))
    return None if best is None else best[1]
