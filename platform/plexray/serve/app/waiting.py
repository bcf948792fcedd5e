"""The waiting line of one replica: callers who found the fleet full wait here, first come first
served, for the next session slot of this replica's engine.

A waiting caller never takes a slot someone else could use: its WebSocket holds one of the Serve
request slots set aside for waiting (see deployments.deployment_options), and it takes an engine
slot only at the head of the line. A newcomer never overtakes: while anyone waits, it joins the back.
The engine frees slots at its ticks, so the head looks for one once per tick; that needs no signal
from whichever task saw a session end, whether the client, the engine or a timeout ended it.

The cap holds under any burst: `reserve()` checks for room and takes the place in one step (no await
between them, so no other caller runs in between), before the caller's WebSocket is even accepted.
The place is the caller's until it leaves (`with place:`), however its wait ends: the accept failing,
a hang-up, the time limit, or a seat.
"""

from __future__ import annotations

import asyncio
import collections
import typing as tp

from plexray.model.prompt import FRAME_SAMPLES, SAMPLE_RATE
from plexray.serve.engine import EngineFullError

ENGINE_TICK_S = FRAME_SAMPLES / SAMPLE_RATE

T = tp.TypeVar("T")


class WaitingLine:
    def __init__(self, max_callers: int, max_wait_s: float, check_period_s: float = ENGINE_TICK_S):
        self.max_callers = max_callers
        self.max_wait_s = max_wait_s
        self.check_period_s = check_period_s
        self._line: collections.deque[Place] = collections.deque()

    def __len__(self) -> int:
        return len(self._line)

    @property
    def has_room(self) -> bool:
        return len(self._line) < self.max_callers

    def try_now(self, open_slot: tp.Callable[[], T]) -> T | None:
        """`open_slot()` at once when nobody waits; None when the caller must wait (or be refused).

        `open_slot` raises EngineFullError while the engine is full; its other errors propagate.
        """
        if self._line:
            return None
        try:
            return open_slot()
        except EngineFullError:
            return None

    def reserve(self) -> Place | None:
        """A place at the back of the line, taken now; None when the line is full (the caller is told busy)."""
        if not self.has_room:
            return None
        place = Place(self)
        self._line.append(place)
        return place


class Place:
    """One caller's place in the line, from `WaitingLine.reserve()` until it leaves (a context manager)."""

    def __init__(self, line: WaitingLine):
        self.line = line

    def __enter__(self) -> Place:
        return self

    def __exit__(self, *exc) -> None:
        self.leave()

    def leave(self) -> None:
        """Give the place up (idempotent)."""
        if self in self.line._line:
            self.line._line.remove(self)

    async def wait(self, open_slot: tp.Callable[[], T]) -> T:
        """`open_slot()`'s result once this place is at the head and a slot is free; the place is then left.

        Raises TimeoutError after the line's max_wait_s. Cancelling the wait (the caller hung up) leaves
        the line too.
        """
        try:
            async with asyncio.timeout(self.line.max_wait_s):
                while True:
                    if self.line._line[0] is self:
                        try:
                            return open_slot()
                        except EngineFullError:
                            pass
                    await asyncio.sleep(self.line.check_period_s)
        finally:
            self.leave()
