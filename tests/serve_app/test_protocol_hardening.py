"""Malformed input of any shape gets the protocol's error, never a traceback; caller input is escaped in logs.

Codec and conversation checks without a server (fast); the Serve module test_ledger_restart.py and
test_serve_app.py cover the same paths through real Serve.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import numpy as np
import pytest

from plexray.serve.app import binary_protocol as binary
from plexray.serve.app import json_protocol
from plexray.serve.app.conversation import ConversationLimits, VoiceProtocol, converse
from plexray.serve.app.errors import CloseCode, ProtocolError
from plexray.serve.engine.session import SessionStats
from ogg_pages import OPUS_HEAD_AT, opus_pages, with_byte

DEEP_JSON = "[" * 100_000 + "]" * 100_000
HUGE_NUMBER = "9" * 5000


# ----- JSON protocol ---------------------------------------------------------------------------
@pytest.mark.parametrize("raw, problem", [
    (DEEP_JSON, "nested too deeply"),
    ('{"type": "audio_chunk", "data": "", "sample_rate": ' + HUGE_NUMBER + "}", "not valid JSON"),
    ('{"type": "ping", "x": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
    ('{"type": ["audio_chunk"]}', "'type' must be a string"),
    ('{"type": {"a": 1}}', "'type' must be a string"),
    ('{"type": "audio_chunk", "data": "", "format": ["pcm"]}', "'format' must be a string"),
    ('{"type": "audio_chunk", "data": "", "format": {"pcm": 1}}', "'format' must be a string"),
    ('{"type": "audio_chunk", "data": ["AAAA"]}', "base64 string"),
    ('{"type": "audio_chunk", "data": "", "sample_rate": [24000]}', "'sample_rate' must be an integer"),
    ('{"type": "audio_chunk", "data": "", "sample_rate": 1e400}', "'sample_rate' must be an integer"),
    ('"' + "\\ud800" + '"', "JSON object"),
])
def test_json_messages_of_any_shape_are_protocol_errors(raw, problem):
    with pytest.raises(ProtocolError, match=problem) as refused:
        json_protocol.decode_client_message(raw)
    assert len(str(refused.value)) < 300  # the answer names the problem; it does not echo the input


def test_json_errors_do_not_echo_caller_input_raw():
    with pytest.raises(ProtocolError) as refused:
        json_protocol.decode_client_message(json.dumps({"type": "dance\n\r\x00" + "x" * 10_000}))
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 300


# ----- binary protocol ---------------------------------------------------------------------------
@pytest.mark.parametrize("payload, problem", [
    (DEEP_JSON.encode(), "nested too deeply"),
    (b'{"n": ' + HUGE_NUMBER.encode() + b"}", "too many digits"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_binary_metadata_of_any_shape_is_a_protocol_error(payload, problem):
    with pytest.raises(ProtocolError, match=problem):
        binary.decode_client_message(bytes([binary.Kind.METADATA]) + payload)


@pytest.fixture(name="opus_pages")
def opus_pages_fixture() -> list[bytes]:
    return opus_pages()


def test_the_page_crc_matches_sphn(opus_pages):
    for page in opus_pages:
        unchecked = page[:22] + bytes(4) + page[26:]
        assert binary.ogg_crc(unchecked) == int.from_bytes(page[22:26], "little")


@pytest.mark.parametrize("corrupt, problem", [
    (lambda pages: pages[0][:OPUS_HEAD_AT + 19] + b"".join(pages[1:3]) + pages[3][:-5], "truncated"),
    (lambda pages: pages[0] + pages[1] + pages[2][:30], "truncated"),
    (lambda pages: pages[0] + pages[1] + pages[2][:-1] + bytes([pages[2][-1] ^ 0xFF]), "checksum"),
    (lambda pages: with_byte(pages[0], 4, 1) + b"".join(pages[1:]), "version"),
    (lambda pages: with_byte(pages[0], OPUS_HEAD_AT + 8, 16) + b"".join(pages[1:]), "OpusHead version 16"),
    (lambda pages: with_byte(pages[0], OPUS_HEAD_AT + 9, 2) + b"".join(pages[1:]), "2 channels"),
    (lambda pages: with_byte(pages[0], OPUS_HEAD_AT + 9, 0) + b"".join(pages[1:]), "0 channels"),
    (lambda pages: with_byte(pages[0], OPUS_HEAD_AT, ord("X")) + b"".join(pages[1:]), "OpusHead"),
    (lambda pages: b"".join(pages[2:]), "before its OpusHead"),
    (lambda pages: pages[0] + pages[2], "OpusTags"),
])
def test_malformed_ogg_opus_streams_are_refused(opus_pages, corrupt, problem):
    with pytest.raises(ProtocolError, match=problem):
        binary.OpusDecoder().decode(corrupt(opus_pages))


def test_a_refused_page_leaves_the_stream_usable(opus_pages):
    decoder = binary.OpusDecoder()
    decoder.decode(b"".join(opus_pages[:2]))
    with pytest.raises(ProtocolError, match="checksum"):
        decoder.decode(opus_pages[2][:-1] + bytes([opus_pages[2][-1] ^ 0xFF]))
    assert decoder.decode(b"".join(opus_pages[2:])).size > 0  # nothing of the bad page reached the decoder


def test_a_new_stream_restarts_the_decoder(opus_pages):
    decoder = binary.OpusDecoder()
    first = decoder.decode(b"".join(opus_pages))
    second = decoder.decode(b"".join(opus_pages))  # a client restarting its recorder: new OpusHead
    assert first.size == second.size > 0


# ----- logs ---------------------------------------------------------------------------------------
def test_caller_input_is_escaped_in_the_replica_log():
    from plexray.serve.app import ingress  # noqa: F401 - importing the app sets up the replica logger

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    logger = logging.getLogger("ray.serve")
    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning("session %s: %s", "evil\nFAKE LINE\r\x00", ValueError("bad\nvalue"))
    finally:
        logger.removeHandler(handler)
    assert records == ["session evil\\nFAKE LINE\\r\\x00: bad\\nvalue"]


# ----- conversation ---------------------------------------------------------------------------
class ScriptedSocket:
    """A WebSocket stand-in that delivers scripted client messages; for what a real client cannot provoke."""

    def __init__(self, messages: list[dict], send_error: Exception | None = None):
        from starlette.websockets import WebSocketState

        self.messages = list(messages)
        self.sent: list = []
        self.closed: tuple[int, str] | None = None
        self.send_error = send_error
        self.application_state = self.client_state = WebSocketState.CONNECTED
        self.hang_up = asyncio.Event()

    async def receive(self) -> dict:
        if self.messages:
            return self.messages.pop(0)
        await self.hang_up.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send_text(self, text: str) -> None:
        if self.send_error is not None:
            raise self.send_error
        self.sent.append(text)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class QuietSession:
    """An engine session stand-in whose prefill never finishes (an engine that stopped answering)."""

    def __init__(self):
        self.stats = SessionStats()
        self.pushed: list[np.ndarray] = []
        self.closed = False
        self.ended_reason = None
        self.ready = asyncio.Event()

    async def wait_ready(self) -> bool:
        await self.ready.wait()
        return True

    async def next_output(self):
        return None

    def push_pcm(self, pcm, sample_rate=24000, received_at=None) -> None:
        self.pushed.append(pcm)

    def poll_output(self):
        return None

    def close(self) -> None:
        self.closed = True


def _voice_protocol() -> VoiceProtocol:
    return VoiceProtocol("assistant", "s1", "NATF0")


def test_no_task_outlives_its_conversation():
    async def scenario():
        ws = ScriptedSocket([{"type": "websocket.disconnect", "code": 1001}])
        reason = await converse(ws, QuietSession(), _voice_protocol(), ConversationLimits(1 << 16))
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        return reason, others

    reason, others = asyncio.run(scenario())
    assert reason == "disconnected" and others == []


def test_an_internal_failure_is_not_reported_as_a_disconnect():
    async def scenario():
        ws = ScriptedSocket([], send_error=RuntimeError("a bug, not a hang-up"))
        session = QuietSession()
        session.ready.set()
        reason = await converse(ws, session, _voice_protocol(), ConversationLimits(1 << 16))
        ws.hang_up.set()
        return reason, ws.closed

    reason, closed = asyncio.run(scenario())
    assert reason == "internal_error" and closed[0] == CloseCode.INTERNAL_ERROR


def test_a_session_ended_by_a_failed_engine_closes_with_internal_error():
    async def scenario():
        ws = ScriptedSocket([])
        session = QuietSession()
        session.ended_reason = "engine_failed"  # a tick raised: the engine ended every session
        session.ready.set()
        reason = await converse(ws, session, _voice_protocol(), ConversationLimits(1 << 16))
        ws.hang_up.set()
        return reason, ws.closed, [json.loads(sent) for sent in ws.sent]

    reason, closed, sent = asyncio.run(scenario())
    assert reason == "engine_failed" and closed == (CloseCode.INTERNAL_ERROR, "engine_failed")
    assert sent[-1] == {"type": "ended", "reason": "engine_failed"}


def test_size_limit_counts_bytes_not_characters():
    wide = json.dumps({"type": "ping", "pad": "é" * 600})  # about 620 characters, 1220 bytes

    async def scenario():
        ws = ScriptedSocket([{"type": "websocket.receive", "text": wide}, {"type": "websocket.receive",
                                                                           "text": json.dumps({"type": "end"})}])
        await converse(ws, QuietSession(), _voice_protocol(), ConversationLimits(1024))
        return [json.loads(sent) for sent in ws.sent]

    sent = asyncio.run(scenario())
    assert sent[0]["type"] == "error" and "exceeds the limit of 1024 bytes" in sent[0]["message"]


def test_empty_audio_chunks_are_not_activity():
    empty = json.dumps({"type": "audio_chunk", "format": "pcm", "data": ""})
    some = json.dumps({"type": "audio_chunk", "format": "pcm16", "sample_rate": 48000,
                       "data": base64.b64encode(np.zeros(960, "<i2").tobytes()).decode()})

    async def scenario():
        session = QuietSession()
        ws = ScriptedSocket([{"type": "websocket.receive", "text": text} for text in (empty, some, empty)]
                            + [{"type": "websocket.receive", "text": json.dumps({"type": "end"})}])
        await converse(ws, session, _voice_protocol(), ConversationLimits(1 << 16))
        return session.pushed

    pushed = asyncio.run(scenario())
    assert len(pushed) == 1  # only the chunk with samples reached the engine (and reset its idle clock)
