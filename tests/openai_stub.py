"""A local OpenAI-compatible HTTP server for tests: each test decides the answers, the platform's real client calls it."""

from __future__ import annotations

import json
import threading
import typing as tp
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# (path, JSON body) -> (HTTP status, JSON payload, raw text for a server that misbehaves, or bytes: audio)
Answer = tp.Callable[[str, dict], tuple[int, tp.Union[dict, str, bytes]]]


class OpenAICompatibleServer:
    """POST routes on 127.0.0.1 (a free port), answered by `answer`; `base_url` ends in /v1. A context manager."""

    def __init__(self, answer: Answer):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload = answer(self.path, body)
                binary = isinstance(payload, bytes)
                data = payload if binary else (json.dumps(payload) if isinstance(payload, dict) else payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if binary else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet: the tests assert on answers, not on access lines
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "OpenAICompatibleServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
