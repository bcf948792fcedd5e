"""SessionService in one event loop, without Serve or a model: a stand-in engine and WebSockets whose
order of events the test controls, for orderings a real client cannot pin down (no sleeping).

Covers: callers arriving together on a full replica never overfill its waiting line; a session's
ledger entry is gone before its close frame; a flood of a client's error messages is logged once; the
death of the Serve proxy carrying a conversation ends it as a hang-up, not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
import typing as tp

from ray.exceptions import ActorDiedError
from starlette.datastructures import Address
from starlette.websockets import WebSocketState

from plexray.serve.app import binary_protocol as binary
from plexray.serve.app.admission import AdmissionLedger
from plexray.serve.app.conversation import CLIENT_REPORTS_BURST, ChatProtocol, ConversationLimits, converse
from plexray.serve.app.errors import CloseCode
from plexray.serve.app.ingress import SessionService
from plexray.serve.config import ServeConfig
from plexray.serve.engine import EngineFullError

GUARD_S = 30  # failure guard: a scenario that never settles fails instead of hanging (no timing assertion)
LIMITED_KEY = "limited-key-0123456789"


class LocalLedger:
    """The admission ledger in this process, behind the async interface a replica uses."""

    def __init__(self):
        self.books = AdmissionLedger(new_sessions_per_minute=1000, report_period_s=1.0)

    async def admit(self, *args) -> None:
        self.books.admit(*args)

    async def release(self, *args) -> None:
        self.books.release(*args)

    async def report(self, *args) -> None:
        self.books.report(*args)

    async def forget(self, *args) -> None:
        self.books.forget(*args)


class StandInSession:
    """An engine session that is ready at once, makes no frames and ends when closed."""

    def __init__(self):
        self.settings = types.SimpleNamespace(text_seed=1, audio_seed=2, voice="NATF0")
        self.ended_reason = None
        self._closed = asyncio.Event()

    async def wait_ready(self) -> bool:
        return True

    async def next_output(self):
        await self._closed.wait()
        return None

    def push_pcm(self, pcm, sample_rate=24000, received_at=None) -> None:
        pass

    def poll_output(self):
        return None

    def close(self) -> None:
        self._closed.set()


class StandInEngine:
    """`capacity` slots, `taken` of them held by others; sessions are StandInSession."""

    def __init__(self, capacity: int, taken: int):
        self.capacity, self.active_sessions, self.failure = capacity, taken, None
        self.bundle = types.SimpleNamespace(tokenizer=types.SimpleNamespace(encode=lambda text: text.split()))

    def open_session(self, settings) -> StandInSession:
        if self.active_sessions >= self.capacity:
            raise EngineFullError("full")
        self.active_sessions += 1
        return StandInSession()


class Caller:
    """A client's WebSocket as Starlette gives it to the app: `messages` arrive, then it stays until `hang_up`.

    accept() gives the event loop a turn, as the real one does (it awaits the ASGI send)."""

    def __init__(self, messages: list[bytes] = (), api_key: str | None = None, on_close=lambda: None):
        self.query_params = {"api_key": api_key} if api_key else {}
        self.headers, self.path_params = {}, {}
        self.client = Address("127.0.0.1", 5000)
        self.url = types.SimpleNamespace(path="/api/chat", query="")
        self.application_state = self.client_state = WebSocketState.CONNECTING
        self.messages = [{"type": "websocket.receive", "bytes": message} for message in messages]
        self.waiting = False  # reading with nothing more to read: the caller is in the line or talking
        self.sent: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.hung_up = asyncio.Event()
        self.on_close = on_close

    async def accept(self) -> None:
        await asyncio.sleep(0)
        self.application_state = self.client_state = WebSocketState.CONNECTED

    async def receive(self) -> dict:
        if self.messages:
            return self.messages.pop(0)
        self.waiting = True
        await self.hung_up.wait()
        return {"type": "websocket.disconnect", "code": 1001}

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def send_text(self, data: str) -> None:
        self.sent.append(data.encode())

    async def close(self, code: int, reason: str) -> None:
        self.on_close()
        self.closed = (code, reason)
        self.application_state = WebSocketState.DISCONNECTED


def service(engine: StandInEngine, ledger: LocalLedger, **config) -> SessionService:
    return SessionService(engine, ServeConfig(sessions_per_replica=engine.capacity, **config), ledger, "r1")


def test_callers_arriving_together_never_overfill_the_waiting_line():
    places = 2

    async def scenario():
        replica = service(StandInEngine(capacity=2, taken=2), LocalLedger(),
                          waiting_line={"max_callers_per_replica": places, "max_wait_s": 600})
        callers = [Caller() for _ in range(10)]
        calls = [asyncio.create_task(replica.chat(caller)) for caller in callers]
        longest = 0
        while not all(caller.closed or caller.waiting for caller in callers):  # each told busy, or waiting
            longest = max(longest, len(replica.line), len(replica.waiting))  # waiting: what /voice/status counts
            await asyncio.sleep(0)
        busy_while_others_wait = sum(caller.closed is not None for caller in callers)
        for caller in callers:
            caller.hung_up.set()
        await asyncio.gather(*calls)
        return longest, busy_while_others_wait, [caller.closed for caller in callers if caller.closed], replica

    longest, busy, refusals, replica = asyncio.run(asyncio.wait_for(scenario(), GUARD_S))
    assert longest == places and busy == 10 - places
    assert all(code == CloseCode.TRY_AGAIN_LATER and reason.startswith("busy") for code, reason in refusals)
    assert len(replica.line) == 0 and replica.waiting == {}  # the waiters who hung up left the line


def test_a_session_is_off_the_books_before_its_close_frame():
    """A caller whose key allows one session ends it (0x03 restart) and may call again the moment it sees
    the close frame: by then the ledger must no longer count the session."""
    seen_at_close = []

    async def scenario():
        ledger = LocalLedger()
        security = {"api_keys": [{"name": "limited", "key": LIMITED_KEY, "max_sessions": 1}]}
        replica = service(StandInEngine(capacity=2, taken=0), ledger, security=security)
        restart = bytes([binary.Kind.CONTROL, binary.Control.RESTART])
        caller = Caller([restart], api_key=LIMITED_KEY,
                        on_close=lambda: seen_at_close.append(ledger.books.sessions_of_key("limited")))
        await replica.chat(caller)
        return caller.closed

    closed = asyncio.run(asyncio.wait_for(scenario(), GUARD_S))
    assert closed == (CloseCode.NORMAL, "client_end") and seen_at_close == [0]


@contextlib.contextmanager
def replica_log() -> tp.Iterator[list[logging.LogRecord]]:
    """The records Serve's logger gets meanwhile, at INFO as in a replica."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger, keep, level = logging.getLogger("ray.serve"), Keep(), logging.getLogger("ray.serve").level
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)


def test_a_flood_of_client_error_messages_is_logged_once_and_ends_the_conversation():
    flood = [bytes([binary.Kind.ERROR]) + b"x" * 199 for _ in range(2000)]

    async def scenario():
        caller = Caller(flood)
        caller.application_state = caller.client_state = WebSocketState.CONNECTED
        return await converse(caller, StandInSession(), ChatProtocol(), ConversationLimits(1 << 16)), caller

    with replica_log() as records:
        reason, caller = asyncio.run(asyncio.wait_for(scenario(), GUARD_S))
    lines = [logging.Formatter().format(record) for record in records]
    assert reason == "protocol_errors" and caller.closed[0] == CloseCode.INVALID_DATA
    logged = [line for line in lines if "error" in line]
    assert len(logged) == CLIENT_REPORTS_BURST + 1 and "past" in logged[-1]  # the burst, then one line with a count
    assert sum(len(line) for line in lines) < 2_000


class CallerBehindADyingProxy(Caller):
    """Reading a client message through a Serve proxy that has died raises the proxy actor's death."""

    async def receive(self) -> dict:
        raise ActorDiedError()


def test_the_death_of_the_serve_proxy_ends_a_conversation_as_a_hang_up():
    """Issue 23 item 4: each live session logged it as 'ERROR conversation failed on this side' with a
    traceback, and ended as internal_error."""
    async def scenario():
        caller = CallerBehindADyingProxy()
        caller.application_state = caller.client_state = WebSocketState.CONNECTED
        return await converse(caller, StandInSession(), ChatProtocol(), ConversationLimits(1 << 16))

    with replica_log() as records:
        reason = asyncio.run(asyncio.wait_for(scenario(), GUARD_S))
    assert reason == "disconnected"
    assert [record for record in records if record.levelno >= logging.WARNING or record.exc_info] == []
    assert any("proxy" in record.getMessage() for record in records)


def test_a_long_persona_name_is_cut_in_the_log():
    """Issue 23 item 5: a 4,000-character persona name was echoed whole into the log, twice per call."""
    name = "p" * 4000

    async def scenario():
        caller = Caller()
        caller.path_params = {"persona": name}
        caller.url = types.SimpleNamespace(path=f"/ws/voice/{name}", query="")
        await service(StandInEngine(capacity=1, taken=0), LocalLedger()).voice(caller)
        return caller.closed

    with replica_log() as records:
        closed = asyncio.run(asyncio.wait_for(scenario(), GUARD_S))
    assert closed[0] == CloseCode.POLICY
    lines = [logging.Formatter().format(record) for record in records]
    assert any("unknown persona" in line and " characters)" in line for line in lines), lines
    assert max(len(line) for line in lines) < 1_000, max(lines, key=len)[:200]
