"""Code that Ray Serve's HTTP proxy runs at start: it makes the proxy answer the WebSocket handshakes it refuses.

Serve's proxy is uvicorn, whose WebSocket protocol (uvicorn 0.54, `websockets_sansio_impl`) lets the
`websockets` library parse the opening handshake. When that parse fails (a request line over 8 KB, e.g.
`/api/chat?text_prompt=` + 50 KB; header lines over 8 KB or too many headers; a malformed request),
`websockets` queues its HTTP answer (414, 431 or 400) but uvicorn never writes it: the caller hears
nothing until it gives up, and the request never reaches plexray, so plexray cannot answer it either.

Ray runs a function named by RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH in each proxy when it starts
(meant for returning ASGI middlewares). `answer_refused_handshakes` uses it to send that queued answer
and close the connection. The variable must be in the environment of the process that starts Ray
(`ray start`, or the driver of a local cluster): cluster.yaml sets it, `plexray serve run`, the demo
and the tests call `enable_in_this_environment()` before starting Ray.
"""

from __future__ import annotations

import os

PROXY_CALLBACK_VARIABLE = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "plexray.serve.proxy_hook.answer_refused_handshakes"


def enable_in_this_environment() -> None:
    """Name the hook for Serve proxies started from this process's environment (an operator's own setting wins)."""
    os.environ.setdefault(PROXY_CALLBACK_VARIABLE, PROXY_CALLBACK)


def answer_refused_handshakes() -> list:
    """Patch uvicorn's sans-I/O WebSocket protocol in this (proxy) process; returns no middlewares."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    if getattr(WebSocketsSansIOProtocol, "_plexray_answers_refusals", False):
        return []
    received = WebSocketsSansIOProtocol.data_received

    def data_received(self: WebSocketsSansIOProtocol, data: bytes) -> None:
        received(self, data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None and not self.transport.is_closing():
            # websockets refused the handshake before uvicorn saw a request: send its queued answer.
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    WebSocketsSansIOProtocol.data_received = data_received
    WebSocketsSansIOProtocol._plexray_answers_refusals = True
    return []
