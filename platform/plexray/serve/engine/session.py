"""A conversation as the caller sees it: push user audio in, await agent audio + text out.

The engine's worker thread produces outputs and the caller's asyncio loop consumes them; every
shared field is guarded by one lock, and wake-ups cross threads with `call_soon_threadsafe`.
A slow reader loses its oldest frames (counted) rather than slowing the engine down.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time

import numpy as np

from plexray.model.prompt import FRAME_SAMPLES, SAMPLE_RATE
from plexray.serve.engine.audio_input import AudioCounters, StreamResampler, clean_pcm
from plexray.serve.engine.config import SessionSettings


@dataclasses.dataclass(frozen=True)
class SessionOutput:
    """One 80 ms frame of the agent: audio and the text piece generated with it ('' if none)."""

    pcm: np.ndarray  # [1920] float32, 24 kHz
    text: str
    text_token: int  # the raw text token id (padding included), for tests and logging
    audio_codes: tuple[int, ...]  # the agent's 8 Mimi codes of this frame, for tests and recording
    # time.monotonic() when the user frame this tick consumed became complete (the push that supplied
    # its last sample); None when the tick used silence because no full frame was buffered. With
    # produced_at it times a frame through the engine (tick phase + tick); the ingress adds its own share.
    input_received_at: float | None
    produced_at: float  # time.monotonic() when the engine published this frame


@dataclasses.dataclass
class SessionStats:
    frames_out: int = 0  # frames produced for this session
    frames_dropped: int = 0  # output frames dropped because the reader was too slow
    input_frames: int = 0  # user frames the engine consumed from the client
    input_underruns: int = 0  # ticks where no full user frame was buffered: silence used
    input_dropped_samples: int = 0  # user samples dropped because the client pushed too far ahead
    prefill_frames: int = 0
    prefill_ms: float = 0.0  # compute time of this session's prefill
    audio: AudioCounters = dataclasses.field(default_factory=AudioCounters)


class Session:
    """Created by `Engine.open_session`; never constructed by callers."""

    def __init__(self, session_id: int, settings: SessionSettings, output_buffer_frames: int,
                 input_buffer_frames: int):
        self.id = session_id
        self.settings = settings
        self.stats = SessionStats()
        self._lock = threading.Lock()
        self._outputs: collections.deque[SessionOutput] = collections.deque()
        self._output_limit = output_buffer_frames
        self._input = np.zeros(0, np.float32)  # pending user samples, oldest first
        self._input_limit = input_buffer_frames * FRAME_SAMPLES
        # Where each push ended in the user stream and when it was received, oldest first: a frame's
        # stamp is that of the push that supplied its last sample. Positions count samples since the
        # session began; _consumed is where _input starts (taken by the engine or dropped before it).
        self._received = 0
        self._consumed = 0
        self._push_marks: collections.deque[tuple[int, float]] = collections.deque()
        self._pushes = 0  # push_pcm calls, so the engine can tell an idle client
        self._resampler = StreamResampler()  # the client's audio is one stream: filter state kept across pushes
        self._ready = False
        self._ended_reason: str | None = None
        self._ended_detail: str | None = None
        self._close_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    # ----- caller side -------------------------------------------------------------------------
    def push_pcm(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE, received_at: float | None = None) -> None:
        """Queue user audio: mono, any length; float in [-1, 1] or integer PCM; 24 kHz unless told.

        Bad audio is repaired (NaN -> 0, clipping, resampling) or refused with BadAudioError; both
        are counted in `stats.audio`. Pushing into an ended session is ignored. Successive pushes are
        one stream: audio at another rate is resampled with the filter state carried from push to push
        (the first push at a rate holds back the filter's delay, under one frame).

        `received_at`: when this audio reached the server (time.monotonic(); now if not given). The
        agent frame of the tick that consumes the user frame this push completes carries it as
        `SessionOutput.input_received_at`, so latency is measured from the caller's own clock reading.
        """
        received_at = time.monotonic() if received_at is None else received_at
        with self._lock:
            samples = clean_pcm(pcm, sample_rate, self.stats.audio, self._resampler)
            self._pushes += 1
            if self._ended_reason is not None:
                return
            if samples.size:  # a push that yields no samples (a resampler filling up) completes nothing
                self._received += samples.size
                self._push_marks.append((self._received, received_at))
            pending = np.concatenate([self._input, samples]) if self._input.size else samples
            excess = pending.size - self._input_limit
            if excess > 0:  # the client is far ahead of real time: keep the newest audio
                self.stats.input_dropped_samples += excess
                pending = pending[excess:]
                self._advance(excess)
            self._input = pending

    async def wait_ready(self) -> bool:
        """Wait until the prompt prefill is done (True), or the session ended before that (False)."""
        while True:
            event = self._event()
            with self._lock:
                if self._ready or self._ended_reason is not None:
                    return self._ready
            await event.wait()

    async def next_output(self) -> SessionOutput | None:
        """The next agent frame, waiting for it; None once the session has ended and all are read."""
        while True:
            event = self._event()
            output = self.poll_output()
            if output is not None:
                return output
            if self.ended_reason is not None:
                return None
            await event.wait()

    def poll_output(self) -> SessionOutput | None:
        """The next agent frame if one is buffered (no waiting): for synchronous callers."""
        with self._lock:
            return self._outputs.popleft() if self._outputs else None

    def close(self) -> None:
        """End the conversation (reason 'closed'). Its slot counts as free at once; the tick thread
        releases it at the next tick."""
        with self._lock:
            self._close_requested = True

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._ready

    @property
    def ended_reason(self) -> str | None:
        """None while live; then 'closed', 'max_duration', 'idle_timeout', 'engine_stopped',
        'engine_failed' (a tick raised: see Engine.failure) or 'adapter_failed' (its adapter could not be
        read: see ended_detail; before the session was seated, so it never produced a frame)."""
        with self._lock:
            return self._ended_reason

    @property
    def ended_detail(self) -> str | None:
        """Why, in words, where the reason alone does not say (the adapter's error for 'adapter_failed')."""
        with self._lock:
            return self._ended_detail

    def _event(self) -> asyncio.Event:
        """The event this session sets when something changes; cleared before each check (no lost wake-up)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._changed = loop, asyncio.Event()
        assert self._changed is not None
        self._changed.clear()
        return self._changed

    # ----- engine side (called from the engine's tick thread) ---------------------------------
    def _take_input_frame(self) -> tuple[np.ndarray | None, int, float | None]:
        """The oldest full user frame [1920] (None if none buffered), the push count so far, and when
        that frame became complete (the `received_at` of the push that supplied its last sample)."""
        with self._lock:
            pushes = self._pushes
            if self._input.size < FRAME_SAMPLES:
                self.stats.input_underruns += 1
                return None, pushes, None
            frame, self._input = self._input[:FRAME_SAMPLES], self._input[FRAME_SAMPLES:]
            completed_at = self._advance(FRAME_SAMPLES)
            self.stats.input_frames += 1
            return frame, pushes, completed_at

    def _advance(self, count: int) -> float | None:
        """Move the consumed position `count` samples on (the caller holds self._lock) and return the
        stamp of the push that supplied the last sample passed over; pushes wholly behind are forgotten."""
        self._consumed += count
        while self._push_marks and self._push_marks[0][0] < self._consumed:
            self._push_marks.popleft()  # ended before the last sample passed over
        if not self._push_marks:  # never for buffered samples: every sample came with its push's mark
            return None
        end, stamp = self._push_marks[0]  # the first push reaching the new position supplied its last sample
        if end == self._consumed:
            self._push_marks.popleft()  # wholly consumed now
        return stamp

    def _publish(self, output: SessionOutput) -> None:
        with self._lock:
            if len(self._outputs) >= self._output_limit:
                self._outputs.popleft()
                self.stats.frames_dropped += 1
            self._outputs.append(output)
            self.stats.frames_out += 1
        self._notify()

    def _mark_ready(self) -> None:
        with self._lock:
            self._ready = True
        self._notify()

    def _end(self, reason: str, detail: str | None = None) -> None:
        with self._lock:
            if self._ended_reason is None:
                self._ended_reason, self._ended_detail = reason, detail
            self._input = np.zeros(0, np.float32)
            self._push_marks.clear()
            self._consumed = self._received
        self._notify()

    @property
    def _wants_close(self) -> bool:
        with self._lock:
            return self._close_requested

    def _notify(self) -> None:
        loop, event = self._loop, self._changed
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

