"""A TCP relay in front of Serve's proxy that makes ghosts: conversations whose caller has hung up and
that the server still counts, for as long as a test needs.

A hang-up reaches a replica only after its caller has gone: Serve's proxy answers the client's close
itself and passes the replica a disconnect of its own, so for a moment the replica still counts the
conversation. The moment is short and its length is chance; this relay makes it a fixed order.
`hang_up()` ends the callers' connections at once (they see the connection close) and keeps the
server's side open until the server has answered a later connection through the relay (its first
bytes back): that answer was given while the ghost was still counted, and only then does the server
hear of the hang-up.
"""

from __future__ import annotations

import asyncio
import dataclasses
from urllib.parse import urlsplit


@dataclasses.dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    ghost: bool = False  # its caller hung up; the server's side is still open


class GhostRelay:
    def __init__(self, fleet: dict):
        upstream = urlsplit(fleet["http"])
        self._upstream = (upstream.hostname, upstream.port)
        self._connections: list[_Connection] = []
        self._listener: asyncio.Server | None = None
        self.urls: dict[str, str] = {}  # the fleet's {"ws", "http"} through this relay

    async def __aenter__(self) -> "GhostRelay":
        self._listener = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self._listener.sockets[0].getsockname()[1]
        self.urls = {"ws": f"ws://127.0.0.1:{port}", "http": f"http://127.0.0.1:{port}"}
        return self

    async def __aexit__(self, *exc) -> None:
        self._listener.close()
        for connection in self._connections:
            connection.client.close()
            connection.server.close()
        await self._listener.wait_closed()

    def hang_up(self) -> None:
        """End every caller's connection open now; the server hears of it after its next answer."""
        for connection in self._connections:
            connection.ghost = True
            connection.client.close()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self._upstream)
        connection = _Connection(client_writer, server_writer)
        self._connections.append(connection)
        await asyncio.gather(self._to_server(client_reader, connection), self._to_client(server_reader, connection),
                             return_exceptions=True)

    @staticmethod
    async def _to_server(client_reader: asyncio.StreamReader, connection: _Connection) -> None:
        while data := await client_reader.read(65536):
            connection.server.write(data)
        if not connection.ghost:  # a ghost's server side stays open until a later answer (see _to_client)
            connection.server.close()

    async def _to_client(self, server_reader: asyncio.StreamReader, connection: _Connection) -> None:
        answered = False
        while data := await server_reader.read(65536):
            if not answered:
                answered = True
                self._release_ghosts()
            if not connection.ghost:  # a ghost's frames have nobody to go to
                connection.client.write(data)
        connection.client.close()

    def _release_ghosts(self) -> None:
        """The server answered a connection made after the hang-up: now it may hear of the hang-up."""
        for connection in self._connections:
            if connection.ghost:
                connection.server.close()
