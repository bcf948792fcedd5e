"""Python clients of both protocols (for tests, the load benchmark and smoke checks of a deployment).

    async with ChatClient.connect(url + "/api/chat", text_prompt="...") as chat:
        await chat.handshake()                 # waits for 0x00 (prompt prefill done)
        await chat.send_pcm(pcm)               # float32 24 kHz -> Ogg/Opus -> 0x01 messages
        event = await chat.next_event()        # ("audio", pcm) | ("text", str) | ("error", str) | ...

`Refused` carries the close code and reason (and the protocol error message) of a refused session.
"""

from __future__ import annotations

import asyncio
import json
import typing as tp
import urllib.parse

import numpy as np
import sphn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from plexray.model.prompt import FRAME_SAMPLES, SAMPLE_RATE
from plexray.serve.app import binary_protocol, json_protocol


class Refused(Exception):
    """The server answered with an error message and closed instead of starting the conversation."""

    def __init__(self, code: int | None, reason: str, message: str):
        super().__init__(f"refused ({code}): {message or reason}")
        self.code, self.reason, self.message = code, reason, message


def with_query(url: str, params: tp.Mapping[str, tp.Any]) -> str:
    return url + ("?" + urllib.parse.urlencode(params) if params else "")


class _Client:
    def __init__(self, ws: ClientConnection):
        self.ws = ws

    @classmethod
    def connect(cls, url: str, api_key: str | None = None, origin: str | None = None, **params):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        return _Connecting(cls, connect(with_query(url, params), additional_headers=headers, origin=origin,
                                        proxy=None, max_size=None, open_timeout=30))

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def _recv_or_refused(self):
        try:
            return await self.ws.recv()
        except ConnectionClosed as closed:
            raise Refused(closed.rcvd.code if closed.rcvd else None,
                          closed.rcvd.reason if closed.rcvd else "", "") from None


class _Connecting:
    def __init__(self, cls, connecting):
        self.cls, self.connecting, self.client = cls, connecting, None

    async def __aenter__(self):
        self.client = self.cls(await self.connecting.__aenter__())
        return self.client

    async def __aexit__(self, *exc):
        return await self.connecting.__aexit__(*exc)


class ChatClient(_Client):
    """The PersonaPlex binary protocol of /api/chat, with Opus both ways (like NVIDIA's web client)."""

    def __init__(self, ws: ClientConnection):
        super().__init__(ws)
        self._writer = sphn.OpusStreamWriter(SAMPLE_RATE)
        self._reader = sphn.OpusStreamReader(SAMPLE_RATE)

    async def handshake(self) -> None:
        """Wait for 0x00; raise Refused with the server's 0x05 message and close code if refused instead."""
        first = await self._recv_or_refused()
        if first == binary_protocol.handshake():
            return
        message = first[1:].decode("utf-8", "replace") if first[:1] == bytes([binary_protocol.Kind.ERROR]) else ""
        try:
            await self.ws.recv()
        except ConnectionClosed as closed:
            raise Refused(closed.rcvd.code if closed.rcvd else None,
                          closed.rcvd.reason if closed.rcvd else "", message) from None
        raise Refused(None, "", f"unexpected first message {first[:16]!r}")

    async def send_pcm(self, pcm: np.ndarray) -> None:
        pages = self._writer.append_pcm(np.asarray(pcm, np.float32))
        if pages:
            await self.ws.send(binary_protocol.audio(pages))

    async def send_raw(self, message: bytes | str) -> None:
        await self.ws.send(message)

    async def next_event(self) -> tuple[str, tp.Any]:
        """('audio', pcm float32) | ('text', str) | ('error', str) | ('metadata', dict) | ('ping', None)."""
        message = await self.ws.recv()
        kind, payload = message[0], message[1:]
        if kind == binary_protocol.Kind.AUDIO:
            return "audio", np.asarray(self._reader.append_bytes(payload), np.float32)
        if kind == binary_protocol.Kind.TEXT:
            return "text", payload.decode("utf-8")
        if kind == binary_protocol.Kind.ERROR:
            return "error", payload.decode("utf-8")
        if kind == binary_protocol.Kind.METADATA:
            return "metadata", json.loads(payload)
        if kind == binary_protocol.Kind.PING:
            return "ping", None
        return f"kind 0x{kind:02x}", payload


class VoiceClient(_Client):
    """The JSON protocol of /ws/voice/{persona}, with base64 float32 PCM."""

    async def handshake(self) -> dict:
        """Wait for 'connected' (returned); raise Refused with the error message and close code if refused."""
        first = json.loads(await self._recv_or_refused())
        if first.get("type") == "connected":
            return first
        try:
            await self.ws.recv()
        except ConnectionClosed as closed:
            raise Refused(closed.rcvd.code if closed.rcvd else None, closed.rcvd.reason if closed.rcvd else "",
                          first.get("message", "")) from None
        raise Refused(None, "", f"unexpected first message {first}")

    async def send_pcm(self, pcm: np.ndarray) -> None:
        await self.ws.send(json_protocol.encode_client_audio(pcm))

    async def send(self, message: dict | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def next_event(self) -> tuple[str, tp.Any]:
        """(message type, message): audio_chunk messages carry their decoded PCM under 'pcm'."""
        raw = await self.ws.recv()
        message = json.loads(raw)
        if message.get("type") == "audio_chunk":
            message["pcm"] = json_protocol.decode_audio_chunk(raw)
        return message["type"], message


def frames_of(pcm: np.ndarray) -> tp.Iterator[np.ndarray]:
    """Split audio into 80 ms frames (the last one zero-padded)."""
    padded = np.pad(pcm, (0, -pcm.size % FRAME_SAMPLES)).astype(np.float32)
    yield from padded.reshape(-1, FRAME_SAMPLES)


async def events_until(client, predicate: tp.Callable[[str, tp.Any], bool], limit: int = 500) -> list:
    """Read events until `predicate(kind, value)` holds (that event included); at most `limit` events."""
    events = []
    for _ in range(limit):
        kind, value = await client.next_event()
        events.append((kind, value))
        if predicate(kind, value):
            return events
    raise AssertionError(f"no matching event in {limit} events: {[k for k, _ in events][-20:]}")


async def drain(client) -> None:
    """Read and discard until the server closes (keeps a held session's buffers empty)."""
    try:
        while True:
            await client.next_event()
    except (ConnectionClosed, asyncio.CancelledError):
        pass
