"""The proxy hook: uvicorn (Serve's proxy) answers the WebSocket handshakes that `websockets` refuses.

Here on a plain uvicorn server in this process (the hook patches uvicorn, which is what Serve's proxy
runs); through Serve's own proxy the attack suite sends the same 50 KB handshake (tests/reliability).
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from plexray.serve.proxy_hook import answer_refused_handshakes

ANSWER_WAIT_S = 30.0  # generous: only a hang (the bug) exceeds it


async def accept_and_close(ws: WebSocket) -> None:
    await ws.accept()
    await ws.close()


def handshake(query: str, extra_header: str = "") -> bytes:
    return (f"GET /chat?{query} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_header}\r\n").encode()


async def first_line_of_answers(requests: list[bytes]) -> list[bytes]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[WebSocketRoute("/chat", accept_and_close)]),
                                           lifespan="off", log_level="critical", ws="websockets-sansio"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    answers = []
    try:
        for request in requests:
            reader, writer = await asyncio.open_connection(*sock.getsockname())
            writer.write(request)
            await writer.drain()
            try:
                answers.append(await asyncio.wait_for(reader.readline(), ANSWER_WAIT_S))
            except asyncio.TimeoutError:
                answers.append(b"no answer")
            writer.close()
    finally:
        server.should_exit = True
        await serving
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
