"""One WebSocket <-> one engine Session: a receive loop and a send loop, for either protocol.

The receive loop decodes client messages and pushes audio into the session; a malformed message
gets the protocol's error message and is dropped, so one bad message never ends a conversation
(a client that sends `max_protocol_errors` of them is closed with 1007). The send loop waits for
the prompt prefill (then sends the handshake), streams agent frames, and closes the socket with
the reason the session ended. A conversation returns only once both loops have finished.

A client hanging up is 'disconnected', and so is the death of the Serve proxy that carried the
conversation (its caller's connection went with it: the proxy's side hung up); any other failure of a
loop is a fault of this server: logged, and the socket closed with 1011 ('internal_error').

Frame latency inside the replica (FrameLatency): each client message is stamped when `ws.receive()`
returns, the engine carries the stamp of the user frame it consumed into that tick's agent frame,
and the send loop records, once the frame is handed to the socket, the whole time in this replica
and the engine's share of it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
import typing as tp

import numpy as np
from ray.exceptions import RayActorError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from plexray.errors import PlexrayError
from plexray.serve.app import binary_protocol as binary
from plexray.serve.app import json_protocol
from plexray.serve.app.errors import CloseCode, ProtocolError
from plexray.serve.app.security import replica_logger
from plexray.serve.engine import Session, SessionOutput
from plexray.serve.engine.metrics import percentile

logger = replica_logger()

# How each end reason closes the socket: the replica stopping is 'going away', a client that broke the
# protocol too often 'invalid data', a fault of this server (its engine failing included) 'internal error',
# the rest normal.
END_CLOSE_CODES = {"engine_stopped": CloseCode.GOING_AWAY, "protocol_errors": CloseCode.INVALID_DATA,
                   "internal_error": CloseCode.INTERNAL_ERROR, "engine_failed": CloseCode.INTERNAL_ERROR}
SENDER_GRACE_S = 2.0  # how long a client's end waits for the agent frames already made to go out
# A client's 0x04 metadata and 0x05 error messages are only logged: past this rate they are not (a flood
# would fill the replica's log), each one counts as an invalid message, and their number is logged once.
CLIENT_REPORTS_PER_S = 1.0
CLIENT_REPORTS_BURST = 5


@dataclasses.dataclass
class ConversationLimits:
    max_message_bytes: int
    max_protocol_errors: int = 20


class FrameLatency:
    """Per replica: how long user frames spend in this replica, over the last `history` agent frames.

    For every agent frame whose tick consumed a user frame (silence ticks carry no stamp):
      full   = user frame's message received (ws.receive() returned) -> agent frame handed to the socket
      engine = the same message received -> agent frame published by the engine: the input's Opus
               decode and push, the wait for the next tick (tick phase, up to 80 ms) and the tick itself
      ingress = full - engine, per frame: the output queue's wake-up of the event loop, the protocol's
               work (Opus encode) and the socket send; what the ingress adds after the engine.
    Bounded: the oldest values are forgotten; `frames` counts every frame ever recorded.
    """

    def __init__(self, history: int = 4096):
        self.full_ms: collections.deque[float] = collections.deque(maxlen=history)
        self.engine_ms: collections.deque[float] = collections.deque(maxlen=history)
        self.frames = 0

    def record(self, output: SessionOutput, sent_at: float) -> None:
        if output.input_received_at is None:
            return
        self.full_ms.append((sent_at - output.input_received_at) * 1000)
        self.engine_ms.append((output.produced_at - output.input_received_at) * 1000)
        self.frames += 1

    def snapshot(self) -> dict:
        """p50/p99 in ms of the three times (None before any frame), and the frame count."""
        full, engine = np.asarray(self.full_ms), np.asarray(self.engine_ms)
        pct = percentile
        return {"frame_latency_ms_p50": pct(full, 50), "frame_latency_ms_p99": pct(full, 99),
                "engine_share_ms_p50": pct(engine, 50), "engine_share_ms_p99": pct(engine, 99),
                "ingress_share_ms_p50": pct(full - engine, 50), "ingress_share_ms_p99": pct(full - engine, 99),
                "latency_frames": self.frames}


class Protocol(tp.Protocol):
    name: str

    async def send_ready(self, ws: WebSocket, session: Session) -> None:
        """The prompt prefill is done: tell the client (its settings and prompt, where the protocol does)."""

    async def send_output(self, ws: WebSocket, output: SessionOutput) -> None: ...
    async def send_error(self, ws: WebSocket, message: str, code: str) -> None: ...
    async def send_ended(self, ws: WebSocket, reason: str) -> None: ...
    async def handle(self, ws: WebSocket, message: dict, session: Session, received_at: float) -> bool:
        """Act on one raw ASGI receive message (received at `received_at`, time.monotonic());
        False when the client asked to end the conversation."""

    def finish(self) -> None:
        """The conversation is over: log what was held back during it."""


class ReportBudget:
    """A token bucket: `per_s` messages a second, `burst` at once; counts the messages past it."""

    def __init__(self, per_s: float, burst: int):
        self.per_s, self.burst = per_s, burst
        self._tokens, self._at = float(burst), time.monotonic()
        self.over = 0

    def take(self) -> bool:
        """True if one more message is within the budget; False (and counted) if not."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.over += 1
        return False


class ChatProtocol:
    """The binary protocol of /api/chat (see binary_protocol), speaking only what NVIDIA's client understands.

    That client takes every 0x04 message for Kyutai's server-info record and logs an error for any
    other, so the only 0x04 this side sends is a complete one: after the handshake of a grounded
    session, with what its prompt holds (`knowledge`) as an extra key. Control and metadata messages
    are acted on without a reply, and why a conversation ended travels in the WebSocket close frame alone.
    """

    name = "chat"

    def __init__(self, knowledge: dict | None = None) -> None:
        self.knowledge = knowledge  # a grounded session's passages and token counts, sent in the 0x04
        self._decoder = binary.OpusDecoder()
        self._encoder = binary.OpusEncoder()
        self.paused = False
        self.reports = ReportBudget(CLIENT_REPORTS_PER_S, CLIENT_REPORTS_BURST)  # the client's 0x04 and 0x05

    async def send_ready(self, ws: WebSocket, session: Session) -> None:
        await ws.send_bytes(binary.handshake())
        if self.knowledge is not None:
            await ws.send_bytes(binary.server_info(session.settings, self.knowledge))

    async def send_output(self, ws: WebSocket, output: SessionOutput) -> None:
        pages = self._encoder.encode(output.pcm)
        if pages:
            await ws.send_bytes(binary.audio(pages))
        if output.text:
            await ws.send_bytes(binary.text(output.text))

    async def send_error(self, ws: WebSocket, message: str, code: str) -> None:
        await ws.send_bytes(binary.error(message))

    async def send_ended(self, ws: WebSocket, reason: str) -> None:
        pass  # the close frame that follows carries the reason

    async def handle(self, ws: WebSocket, message: dict, session: Session, received_at: float) -> bool:
        if message.get("bytes") is None:
            raise ProtocolError("/api/chat takes binary messages (kind byte + payload), got a text message")
        decoded = binary.decode_client_message(message["bytes"])
        if decoded.kind is binary.Kind.AUDIO:
            pcm = self._decoder.decode(decoded.payload)
            if pcm.size and not self.paused:
                session.push_pcm(pcm, received_at=received_at)
        elif decoded.kind is binary.Kind.PING:
            await ws.send_bytes(binary.ping())
        elif decoded.kind is binary.Kind.CONTROL:
            return self._control(decoded.control)
        elif decoded.kind in (binary.Kind.METADATA, binary.Kind.ERROR):
            self._log_report(decoded)
        return True

    def finish(self) -> None:
        if self.reports.over:
            logger.warning("the client sent %d error/metadata messages past %g a second (a burst of %d): not "
                           "logged, each counted as an invalid message", self.reports.over, CLIENT_REPORTS_PER_S,
                           CLIENT_REPORTS_BURST)

    def _log_report(self, decoded: binary.ClientMessage) -> None:
        """Log a client's metadata or error message, within the budget; past it, a protocol error."""
        if not self.reports.take():
            raise ProtocolError(f"more than {CLIENT_REPORTS_BURST} error/metadata messages at once or "
                                f"{CLIENT_REPORTS_PER_S:g} a second: this one counts as an invalid message")
        if decoded.kind is binary.Kind.METADATA:
            logger.info("client metadata: %s", ", ".join(sorted(decoded.metadata or {}))[:200])
        else:
            logger.info("client reported an error: %s", decoded.payload[:200].decode("utf-8", "replace"))

    def _control(self, control: binary.Control | None) -> bool:
        if control is binary.Control.PAUSE:
            self.paused = True  # the client's audio is dropped; the engine hears silence
        elif control is binary.Control.START:
            self.paused = False
        elif control is binary.Control.RESTART:
            # A fresh conversation needs a fresh prompt prefill: the client reconnects (cheap, and the
            # slot is freed now rather than after the idle timeout).
            return False
        # END_TURN: a full-duplex model has no turns.
        return True


class VoiceProtocol:
    """The JSON protocol of /ws/voice/{persona} (see json_protocol)."""

    name = "voice"

    def __init__(self, persona: str, session_id: str, voice: str | None, knowledge: dict | None = None):
        self.persona, self.session_id, self.voice = persona, session_id, voice
        self.knowledge = knowledge  # a grounded session's passages, told to the caller in 'connected'
        self._chunks = 0

    async def send_ready(self, ws: WebSocket, session: Session) -> None:
        await ws.send_text(json_protocol.connected(self.persona, self.session_id, self.voice, self.knowledge))

    async def send_output(self, ws: WebSocket, output: SessionOutput) -> None:
        await ws.send_text(json_protocol.audio_chunk(output.pcm, self._chunks))
        self._chunks += 1
        if output.text:
            await ws.send_text(json_protocol.transcription(output.text))

    async def send_error(self, ws: WebSocket, message: str, code: str) -> None:
        await ws.send_text(json_protocol.error(message, code))

    async def send_ended(self, ws: WebSocket, reason: str) -> None:
        await ws.send_text(json_protocol.ended(reason))

    def finish(self) -> None:
        pass  # nothing held back: the JSON protocol has no client messages that are only logged

    async def handle(self, ws: WebSocket, message: dict, session: Session, received_at: float) -> bool:
        raw = message.get("text") if message.get("text") is not None else message.get("bytes")
        decoded = json_protocol.decode_client_message(raw)
        if decoded.type == "audio_chunk":
            # An empty chunk is no sign of life: pushing it would hold off the idle timeout for ever.
            # The session resamples the client's stream (any rate: the talk page sends 48 kHz) with state.
            if decoded.pcm.size:
                session.push_pcm(decoded.pcm, decoded.sample_rate, received_at=received_at)
        elif decoded.type == "ping":
            await ws.send_text(json_protocol.pong())
        elif decoded.type == "interrupt":
            # Stop what the client has yet to play: drop the agent frames buffered for it.
            while session.poll_output() is not None:
                pass
            await ws.send_text(json_protocol.interrupted("user_request"))
        elif decoded.type == "end":
            return False
        return True


async def _nothing() -> None:
    pass


async def converse(ws: WebSocket, session: Session, protocol: Protocol, limits: ConversationLimits,
                   on_protocol_error: tp.Callable[[], None] = lambda: None,
                   frame_latency: FrameLatency | None = None,
                   on_ended: tp.Callable[[], tp.Awaitable[None]] = _nothing) -> str:
    """Run one accepted conversation to its end; returns why it ended. Always closes the session, and
    returns only when its send and receive loops have both finished. `frame_latency`: the replica's
    recorder of in-replica frame latency (None: not measured).

    `on_ended()` is awaited as soon as the session has ended: before the close frame goes out (a caller
    may call again the moment it sees it, and must find its session gone from the books), or at once
    when the client hung up. It may be awaited more than once (by either loop), so it must be idempotent.
    """
    client_reason: str | None = None  # set when the client ends the conversation (or breaks the protocol)
    sender = asyncio.create_task(_send_loop(ws, session, protocol, lambda: client_reason, frame_latency, on_ended))
    receiver = asyncio.create_task(_receive_loop(ws, session, protocol, limits, on_protocol_error))
    try:
        done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if receiver not in done:
            return sender.result()
        client_reason = receiver.result()
        session.close()
        if client_reason == "disconnected":
            await on_ended()
            return client_reason
        # The sender sends what is left, then 'ended' with the client's reason, and closes.
        await asyncio.wait({sender}, timeout=SENDER_GRACE_S)
        if sender.done():
            sender.result()  # a failure of the sender is still this server's fault
        await on_ended()
        await _close(ws, END_CLOSE_CODES.get(client_reason, CloseCode.NORMAL), client_reason)
        return client_reason
    except Exception:  # noqa: BLE001 - a bug on this side; the client hears 1011, the log has the traceback
        logger.exception("conversation failed on this side")
        session.close()
        await on_ended()
        await _close(ws, CloseCode.INTERNAL_ERROR, "internal_error")
        return "internal_error"
    finally:
        session.close()
        for task in (sender, receiver):
            task.cancel()
        await asyncio.gather(sender, receiver, return_exceptions=True)
        protocol.finish()


async def _send_loop(ws: WebSocket, session: Session, protocol: Protocol,
                     client_reason: tp.Callable[[], str | None], frame_latency: FrameLatency | None,
                     on_ended: tp.Callable[[], tp.Awaitable[None]]) -> str:
    try:
        if await session.wait_ready():
            await protocol.send_ready(ws, session)
        while (output := await session.next_output()) is not None:
            await protocol.send_output(ws, output)
            if frame_latency is not None:
                frame_latency.record(output, time.monotonic())
        reason = session.ended_reason or "closed"
        if reason == "closed":  # closed on this side: say why, when it was the client's doing
            reason = client_reason() or reason
        await on_ended()
        await protocol.send_ended(ws, reason)
        await _close(ws, END_CLOSE_CODES.get(reason, CloseCode.NORMAL), reason)
        return reason
    except (WebSocketDisconnect, RuntimeError) as exc:
        if _hung_up(ws, exc):
            return "disconnected"
        raise


async def _receive_loop(ws: WebSocket, session: Session, protocol: Protocol, limits: ConversationLimits,
                        on_protocol_error: tp.Callable[[], None]) -> str:
    try:
        return await _read_messages(ws, session, protocol, limits, on_protocol_error)
    except (WebSocketDisconnect, RuntimeError) as exc:  # an answer (error, pong) to a client now gone
        if _hung_up(ws, exc):
            return "disconnected"
        raise
    except RayActorError as exc:
        # Serve's replica reads client messages from the proxy actor (ASGIReceiveProxy): the proxy has died
        # (its node, a restart). Not this replica's fault, nor one its caller can be told of: a hang-up.
        logger.info("the Serve proxy carrying this conversation is gone (%s): ended as a hang-up",
                    type(exc).__name__)
        return "disconnected"


async def _read_messages(ws: WebSocket, session: Session, protocol: Protocol, limits: ConversationLimits,
                         on_protocol_error: tp.Callable[[], None]) -> str:
    errors = 0
    while True:
        message = await ws.receive()
        received_at = time.monotonic()  # before decoding: the frame's time in this replica starts here
        if message["type"] == "websocket.disconnect":
            return "disconnected"
        try:
            size = _message_bytes(message)
            if size > limits.max_message_bytes:
                raise ProtocolError(f"message of {size} bytes exceeds the limit of {limits.max_message_bytes} bytes")
            if not await protocol.handle(ws, message, session, received_at):
                return "client_end"
        except PlexrayError as exc:  # ProtocolError, BadAudioError: tell the client, keep the session
            errors += 1
            on_protocol_error()
            await protocol.send_error(ws, str(exc), "bad_message" if isinstance(exc, ProtocolError) else "bad_audio")
            if errors >= limits.max_protocol_errors:
                await protocol.send_error(ws, f"{errors} invalid messages: closing", "too_many_errors")
                return "protocol_errors"


def _message_bytes(message: dict) -> int:
    """A message's size on the wire: text counts in UTF-8 bytes, as the limit is stated."""
    if message.get("bytes") is not None:
        return len(message["bytes"])
    return len((message.get("text") or "").encode("utf-8", "surrogatepass"))


def _hung_up(ws: WebSocket, exc: Exception) -> bool:
    """Whether `exc` from a send means the connection is gone (not a fault of this server).

    Starlette raises WebSocketDisconnect when the client has gone, and RuntimeError when this side
    already closed the socket; a RuntimeError on a socket still open both ways is a bug.
    """
    if isinstance(exc, WebSocketDisconnect):
        return True
    return not (ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
        try:
            await ws.close(code, reason)
        except (RuntimeError, WebSocketDisconnect):
            pass
