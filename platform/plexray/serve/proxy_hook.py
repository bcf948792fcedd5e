"""Code that Ray Serve's HTTP proxy runs at start: it makes the proxy answer every handshake in time.

Serve's proxy is uvicorn (0.55 here): `httptools` reads a connection's HTTP request, and for a WebSocket
upgrade the `websockets` library (`websockets_sansio_impl`) parses the opening handshake again. Two gaps
sit before any request reaches plexray's app, so only the proxy can close them:

* When `websockets` refuses the handshake (a request line over 8 KB, e.g. `/api/chat?text_prompt=` +
  50 KB; header lines over 8 KB or too many headers; a malformed request) it queues its HTTP answer
  (414, 431 or 400), but uvicorn never writes it: the caller hears nothing until it gives up.
* uvicorn has no deadline for receiving a request: its only timer, `timeout_keep_alive` (Serve's
  `http_options.keep_alive_timeout_s`), is armed after a response and cancelled by every byte received.
  A connection that sends nothing, or trickles its request one byte at a time, is held forever (issue 23:
  150 idle and 30 trickling connections all open after 36 s), and uvicorn has no setting for it.
  `HANDSHAKE_TIMEOUT_VARIABLE` sets the time a connection has for its request line and headers (on
  connecting, and again after each response); past it the proxy answers 408 and closes the connection.

A third is Ray's: a caller's normal hang-up logged as an error with a traceback (`DropSendsAfterHangUp`).

Ray runs a function named by RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH in each proxy when it starts
(meant for returning ASGI middlewares). `answer_refused_handshakes` patches uvicorn there. The variables
must be in the environment of the process that starts Ray (`ray start`, or the driver of a local
cluster): cluster.yaml sets the callback, `plexray serve run`, the demo and the tests call
`enable_in_this_environment()` before starting Ray.
"""

from __future__ import annotations

import logging
import os

PROXY_CALLBACK_VARIABLE = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "plexray.serve.proxy_hook.answer_refused_handshakes"
HANDSHAKE_TIMEOUT_VARIABLE = "PLEXRAY_HANDSHAKE_TIMEOUT_S"
# Generous for any real client (a browser sends its handshake in one packet, well under a second even on a
# poor mobile link), short enough that a few thousand idle connections cannot exhaust the proxy's files.
DEFAULT_HANDSHAKE_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_ANSWER = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

logger = logging.getLogger("ray.serve")  # Serve's logger: lines land in the proxy's log


def enable_in_this_environment() -> None:
    """Name the hook for Serve proxies started from this process's environment (an operator's own setting wins)."""
    os.environ.setdefault(PROXY_CALLBACK_VARIABLE, PROXY_CALLBACK)


def handshake_timeout_s() -> float:
    """The deadline for a request line and headers, from the proxy's environment."""
    text = os.environ.get(HANDSHAKE_TIMEOUT_VARIABLE, "")
    if not text:
        return DEFAULT_HANDSHAKE_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{HANDSHAKE_TIMEOUT_VARIABLE}={text!r}: give a number of seconds above 0")
    return seconds


class DropSendsAfterHangUp:
    """ASGI middleware around Serve's proxy app: a WebSocket message sent after the caller hung up is dropped.

    uvicorn's `send` raises ClientDisconnected (the ASGI spec's OSError) for a message to a connection
    already gone, and treats it as normal when it leaves the app. An agent frame on its way from the replica
    when the caller hangs up meets it. Ray 2.53's proxy does not expect it (ray/serve/_private/proxy.py:
    `HTTPProxy.__call__` awaits `send` inside `async for` over `proxy_request()`): it leaves its response
    generators suspended, and when they are finalised, `send_request_to_replica`'s `except BaseException`
    takes the GeneratorExit for a failure, logs "Request failed due to unexpected error." with its
    traceback (http_util.get_http_response_status) and yields again ("async generator ignored
    GeneratorExit"). Dropped here, the request ends as any other: the replica hears of the hang-up from
    its receive channel, and the proxy writes its access log line.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        from uvicorn.protocols.utils import ClientDisconnected

        async def send_unless_hung_up(message) -> None:
            try:
                await send(message)
            except ClientDisconnected:
                pass

        await self.app(scope, receive, send_unless_hung_up)


def answer_refused_handshakes() -> list:
    """Patch uvicorn's protocols in this (proxy) process (refused handshakes answered, a deadline for
    requests); returns the middleware that keeps hang-ups out of the proxy's errors."""
    from starlette.middleware import Middleware
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    middlewares = [Middleware(DropSendsAfterHangUp)]
    if getattr(WebSocketsSansIOProtocol, "_plexray_answers_refusals", False):
        return middlewares
    handshake_timeout_s()  # a bad setting fails the proxy's start, not its first connection
    received = WebSocketsSansIOProtocol.data_received

    def data_received(self: WebSocketsSansIOProtocol, data: bytes) -> None:
        received(self, data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None and not self.transport.is_closing():
            # websockets refused the handshake before uvicorn saw a request: send its queued answer.
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    WebSocketsSansIOProtocol.data_received = data_received
    _add_request_deadline(AutoHTTPProtocol)  # the HTTP protocol Serve's proxy runs (http="auto")
    WebSocketsSansIOProtocol._plexray_answers_refusals = True
    return middlewares


def _add_request_deadline(protocol_class: type) -> None:
    """Close a connection whose request's headers have not all arrived `handshake_timeout_s()` after it connected, or
    after the first byte of a later request on it (hyper's header_read_timeout works the same way).

    The time between requests stays uvicorn's `timeout_keep_alive`. uvicorn's HTTP protocols start a new
    `cycle` once a request's headers are complete, and hand the transport to the WebSocket protocol on an
    upgrade: a connection with the same cycle and still this protocol when the deadline comes has not
    sent a whole request since the deadline was armed.
    """
    connection_made = protocol_class.connection_made
    data_received = protocol_class.data_received

    def arm_deadline(self) -> None:
        self._plexray_deadline_for = self.cycle
        timeout_s = handshake_timeout_s()
        self.loop.call_later(timeout_s, close_if_no_request, self, self.cycle, timeout_s)

    def close_if_no_request(self, cycle_when_armed, timeout_s: float) -> None:
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self or self.cycle is not cycle_when_armed:
            return
        client = "%s:%d" % self.client if self.client else "?"
        logger.info("closed the connection from %s: no complete request within %g s (%s)", client, timeout_s,
                    HANDSHAKE_TIMEOUT_VARIABLE)
        transport.write(REQUEST_TIMEOUT_ANSWER)
        transport.close()

    def connection_made_with_deadline(self, transport) -> None:
        connection_made(self, transport)
        arm_deadline(self)

    def data_received_with_deadline(self, data: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and self._plexray_deadline_for is not cycle:
            arm_deadline(self)  # the first byte of a request after a response
        data_received(self, data)

    protocol_class.connection_made = connection_made_with_deadline
    protocol_class.data_received = data_received_with_deadline
