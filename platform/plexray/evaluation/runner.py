"""The serving engine in evaluation mode: test conversations as sessions, stepped as fast as it goes.

Each conversation is a session of `plexray.serve.engine.Engine` with its persona's prompt and voice,
exactly as a served call; up to B of them run in one batch and a waiting conversation takes the
first slot that frees. Nothing waits for the clock: `engine.tick()` runs back to back.

Alignment of the agent track with the user track: a session prefills its prompt first (a served
call does the same before its handshake, before the caller's audio flows); from the tick after,
each tick consumes the next 1920-sample frame of the user track and yields one agent frame. Agent
frame k is what the model said during user frame k, so the agent track has the user track's length
(the last frame's padding cut off) and its times are the user track's times, as in
Full-Duplex-Bench's input.wav / output.wav. The model's own delays (the agent's acoustic codebooks
lag a frame) are in the agent's latency, as a caller hears them. This feeds a session exactly as a
real-time caller who pushes each frame before the tick that takes it.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import typing as tp

import numpy as np

from plexray.errors import PlexrayError
from plexray.model.prompt import FRAME_SAMPLES, SAMPLE_RATE
from plexray.serve.engine import Engine, Session, SessionSettings

logger = logging.getLogger(__name__)
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class EvalConversation:
    id: str
    settings: SessionSettings
    user_audio: np.ndarray  # [N] float32, 24 kHz mono


@dataclasses.dataclass(frozen=True)
class AgentTrack:
    """What the agent did in one conversation; `error` set (and nothing else) if it could not run."""

    id: str
    audio: np.ndarray | None = None  # [N] float32, 24 kHz: the user track's length and times
    text_tokens: list[int] = dataclasses.field(default_factory=list)  # one per 80 ms frame, padding included
    text: list[tuple[float, str]] = dataclasses.field(default_factory=list)  # (frame start s, piece), pieces only
    error: str | None = None


class _Running:
    """A conversation holding a session: its next user frame and the agent frames so far."""

    def __init__(self, conversation: EvalConversation, session: Session):
        self.conversation = conversation
        self.session = session
        self.num_frames = -(-conversation.user_audio.size // FRAME_SAMPLES)
        self.pushed = 0
        self.outputs: list = []

    def push_next_frame(self) -> None:
        """One frame of the user track (the last one padded with silence), once the prompt is done."""
        if not self.session.ready or self.pushed == self.num_frames:
            return
        frame = self.conversation.user_audio[self.pushed * FRAME_SAMPLES:(self.pushed + 1) * FRAME_SAMPLES]
        self.session.push_pcm(np.pad(frame, (0, FRAME_SAMPLES - frame.size)))
        self.pushed += 1

    def collect(self) -> None:
        while (output := self.session.poll_output()) is not None:
            self.outputs.append(output)

    @property
    def done(self) -> bool:
        return len(self.outputs) >= self.num_frames

    def track(self) -> AgentTrack:
        outputs = self.outputs[:self.num_frames]
        audio = np.concatenate([output.pcm for output in outputs])[:self.conversation.user_audio.size]
        text = [(round(index * FRAME_S, 3), output.text) for index, output in enumerate(outputs) if output.text]
        return AgentTrack(self.conversation.id, audio.astype(np.float32),
                          [output.text_token for output in outputs], text)


def run_conversations(make_engine: tp.Callable[[], Engine],
                      conversations: tp.Iterable[EvalConversation]) -> tp.Iterator[AgentTrack]:
    """Run every conversation through engines from `make_engine`; yields each track as it finishes.

    A conversation the engine refuses (unknown voice, prompt too long, bad audio) or that ends early
    comes back with its error. A tick that raises fails the engine (see plexray.serve.engine.engine):
    the conversations in it come back with that error and the rest go on in a new engine.
    """
    waiting = collections.deque(conversations)
    engine = make_engine()
    running: list[_Running] = []
    try:
        while waiting or running:
            while waiting and engine.active_sessions < engine.capacity:
                conversation = waiting.popleft()
                try:
                    running.append(_Running(conversation, engine.open_session(conversation.settings)))
                except PlexrayError as exc:
                    yield AgentTrack(conversation.id, error=f"{type(exc).__name__}: {exc}")
            if not running:
                continue
            failed: list[tuple[_Running, str]] = []
            for run in running:
                try:
                    run.push_next_frame()
                except PlexrayError as exc:  # audio the engine refuses (BadAudioError)
                    failed.append((run, f"{type(exc).__name__}: {exc}"))
            try:
                engine.tick()
            except Exception as exc:  # the engine is unusable now; its sessions are lost, the others are not
                logger.warning("an evaluation engine failed (%s); %d conversation(s) lost, going on in a new one",
                               exc, len(running))
                failed = [(run, f"engine failed: {type(exc).__name__}: {exc}") for run in running]
                engine.close()
                engine = make_engine()
            still_running = []
            for run in running:
                error = next((error for failing, error in failed if failing is run), None)
                if error is None:
                    run.collect()
                    if not run.done and run.session.ended_reason is not None:
                        error = (f"session ended ({run.session.ended_reason}) after {len(run.outputs)} of "
                                 f"{run.num_frames} frames")
                if error is not None:
                    run.session.close()
                    yield AgentTrack(run.conversation.id, error=error)
                elif run.done:
                    run.session.close()
                    yield run.track()
                else:
                    still_running.append(run)
            running = still_running
    finally:
        engine.close()
