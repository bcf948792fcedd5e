"""plexray's Serve applications on a fresh Serve instance on a free loopback port: the fleet that the
serving, browser, knowledge and reliability tests (and the serving benchmarks) talk to."""

from __future__ import annotations

import contextlib
import socket
import typing as tp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def loopback_fleet(overrides: tp.Sequence[str], web_client: bool = False) -> tp.Iterator[dict[str, str]]:
    """The sessions and ops applications (and the web client's, with `web_client`) built from these plexray
    config overrides, on a Ray cluster already started; yields the base URLs {"ws", "http"}. Serve is shut
    down at the end, so the next fleet starts clean."""
    from ray import serve

    from plexray.serve.app.builders import ops_app, sessions_app, web_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {"set": list(overrides)}
    try:
        serve.run(sessions_app(args), name="plexray", route_prefix="/")  # the other two find it by this name
        serve.run(ops_app(args), name="plexray-ops", route_prefix="/voice")
        if web_client:
            serve.run(web_app(args), name="plexray-web", route_prefix="/assets")
        yield {"ws": f"ws://127.0.0.1:{port}", "http": f"http://127.0.0.1:{port}"}
    finally:
        serve.shutdown()
