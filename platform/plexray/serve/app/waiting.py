"""The waiting line of one replica: callers who found the fleet full wait here, first come first
served, for the next session slot of this replica's engine.

A waiting caller never takes a slot someone else could use: its WebSocket holds one of the Serve
request slots set aside for waiting (see deployments.deployment_options), and it takes an engine
slot only at the head of the line. A newcomer never overtakes: while anyone waits, it joins the back.
The engine frees slots at its ticks, so the head looks for one once per tick; that needs no signal
from whichever task saw a session end, whether the client, the engine or a timeout ended it.
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
        self._line: collections.deque[object] = collections.deque()

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

    async def wait(self, open_slot: tp.Callable[[], T]) -> T:
        """Join the back of the line; `open_slot()`'s result once at the head and a slot is free.

        Raises TimeoutError after max_wait_s. Cancelling the wait (the caller hung up) leaves the line.
        """
        ticket = object()
        self._line.append(ticket)
        try:
            async with asyncio.timeout(self.max_wait_s):
                while True:
                    if self._line[0] is ticket:
                        try:
                            return open_slot()
                        except EngineFullError:
                            pass
                    await asyncio.sleep(self.check_period_s)
        finally:
            self._line.remove(ticket)
