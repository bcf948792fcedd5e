"""The proxy hook: uvicorn (Serve's proxy) answers the WebSocket handshakes that `websockets` refuses.

Here on a plain uvicorn server in this process (the hook patches uvicorn, which is what Serve's proxy
runs); through Serve's own proxy the attack suite sends the same 50 KB handshake (tests/reliability).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from uvicorn.protocols.utils import ClientDisconnected

from plexray.serve.proxy_hook import HANDSHAKE_TIMEOUT_VARIABLE, DropSendsAfterHangUp, answer_refused_handshakes

ANSWER_WAIT_S = 30.0  # generous: only a hang (the bug) exceeds it


async def accept_and_close(ws: WebSocket) -> None:
    await ws.accept()
    await ws.close()


def handshake(query: str, extra_header: str = "") -> bytes:
    return (f"GET /chat?{query} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_header}\r\n").encode()


@contextlib.asynccontextmanager
async def uvicorn_on_loopback():
    """A uvicorn server as Serve's proxy runs it (HTTP protocol 'auto', the sans-I/O WebSocket protocol) with
    one WebSocket route /chat; yields its address."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[WebSocketRoute("/chat", accept_and_close)]),
                                           lifespan="off", log_level="critical", ws="websockets-sansio"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()
    finally:
        server.should_exit = True
        await serving


async def first_line_of_answers(requests: list[bytes]) -> list[bytes]:
    answers = []
    async with uvicorn_on_loopback() as address:
        for request in requests:
            reader, writer = await asyncio.open_connection(*address)
            writer.write(request)
            await writer.drain()
            try:
                answers.append(await asyncio.wait_for(reader.readline(), ANSWER_WAIT_S))
            except asyncio.TimeoutError:
                answers.append(b"no answer")
            writer.close()
    return answers


def test_refused_handshakes_are_answered_and_good_ones_still_open():
    answer_refused_handshakes()
    answer_refused_handshakes()  # idempotent: a second call does not wrap the patch again
    answers = asyncio.run(first_line_of_answers([
        handshake("text_prompt=" + "p" * 50_000),  # request line over websockets' 8 KB
        handshake("a=1", "X-Padding: " + "x" * 9_000 + "\r\n"),  # a header line over 8 KB
        handshake("text_prompt=hello"),
    ]))
    assert answers[0].startswith(b"HTTP/1.1 414"), answers[0]
    assert answers[1].startswith(b"HTTP/1.1 431"), answers[1]
    assert answers[2].startswith(b"HTTP/1.1 101"), answers[2]


async def trickle_until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bytes:
    """Send `request` one byte per write, but for its last byte (a slow client's handshake that never
    completes), then wait until the server closes the connection; returns what the server answered."""
    for byte in request[:-1]:
        writer.write(bytes([byte]))
        await writer.drain()
    return await reader.read()


def test_connections_without_a_whole_request_are_closed_at_the_handshake_deadline(monkeypatch):
    """Issue 23 item 2: idle connections and trickled handshakes were held forever. With a short deadline,
    both are answered 408 and closed; a whole handshake, and an HTTP keep-alive connection between
    requests, are left alone."""
    monkeypatch.setenv(HANDSHAKE_TIMEOUT_VARIABLE, "0.3")
    answer_refused_handshakes()

    async def get_on(connection) -> bytes:
        reader, writer = connection
        writer.write(b"GET /nothing HTTP/1.1\r\nHost: test\r\n\r\n")
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\nNot Found"), ANSWER_WAIT_S)

    async def scenario():
        async with uvicorn_on_loopback() as address:
            idle = await asyncio.open_connection(*address)
            trickling = await asyncio.open_connection(*address)
            good = await asyncio.open_connection(*address)
            keep_alive = await asyncio.open_connection(*address)
            good[1].write(handshake("a=1"))
            first_get = await get_on(keep_alive)
            trickled, silent = await asyncio.wait_for(asyncio.gather(
                trickle_until_closed(*trickling, handshake("a=1")), idle[0].read()), ANSWER_WAIT_S)
            accepted = await asyncio.wait_for(good[0].readline(), ANSWER_WAIT_S)
            second_get = await get_on(keep_alive)  # the deadline has passed: this connection is still served
            for _, writer in (idle, trickling, good, keep_alive):
                writer.close()
            return trickled, silent, accepted, first_get, second_get

    trickled, silent, accepted, first_get, second_get = asyncio.run(scenario())
    assert trickled.startswith(b"HTTP/1.1 408") and silent.startswith(b"HTTP/1.1 408"), (trickled, silent)
    assert accepted.startswith(b"HTTP/1.1 101"), accepted
    assert first_get.startswith(b"HTTP/1.1 404") and second_get.startswith(b"HTTP/1.1 404"), second_get


def test_a_frame_sent_after_the_caller_hung_up_does_not_fail_the_proxy_request():
    """Issue 23 item 4: uvicorn's send raises ClientDisconnected for an agent frame that meets a hang-up,
    and Ray's proxy logged that as 'Request failed due to unexpected error' (see DropSendsAfterHangUp)."""
    (middleware,) = answer_refused_handshakes()
    assert middleware.cls is DropSendsAfterHangUp
    sent_after_hang_up = []

    async def proxy_app(scope, receive, send):  # as Ray's HTTPProxy.__call__: every replica message to `send`
        await send({"type": "websocket.send", "bytes": b"agent frame"})
        sent_after_hang_up.append(True)

    async def hung_up_send(message):
        raise ClientDisconnected()

    asyncio.run(DropSendsAfterHangUp(proxy_app)({"type": "websocket"}, None, hung_up_send))
    assert sent_after_hang_up == [True]
