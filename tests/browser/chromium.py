"""A headless Chromium driven over the DevTools protocol, with a fake microphone fed from a wav file.

Only what the browser tests need: open a page, evaluate JavaScript, wait for a condition.
Debian's `chromium` package provides the browser (scripts/install.sh installs it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0",
]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """`async with Browser(fake_mic_wav) as browser: page = await browser.open(url)`."""

    def __init__(self, fake_microphone_wav: Path):
        self.fake_microphone_wav = fake_microphone_wav
        self.profile = Path(tempfile.mkdtemp(prefix="plexray-chromium-"))
        self.process: subprocess.Popen | None = None

    async def __aenter__(self) -> "Browser":
        binary = chromium_binary()
        assert binary, "chromium is not installed"
        self.process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             f"--use-file-for-fake-audio-capture={self.fake_microphone_wav}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            await asyncio.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        return self

    async def __aexit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)

    async def open(self, url: str) -> "Page":
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list").read())
        page_target = next(t for t in targets if t["type"] == "page")
        page = Page(await websockets.connect(page_target["webSocketDebuggerUrl"], max_size=None))
        await page.call("Page.enable")
        await page.call("Runtime.enable")
        await page.call("Page.navigate", url=url)
        await page.wait_for("document.readyState === 'complete'", timeout_s=30)
        return page


class Page:
    def __init__(self, connection):
        self.connection = connection
        self.ids = itertools.count(1)

    async def call(self, method: str, **params) -> dict:
        message_id = next(self.ids)
        await self.connection.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await self.connection.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float):
        """Poll a JavaScript condition until it is truthy; returns its value, or raises TimeoutError."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout_s}s for: {expression}")
            await asyncio.sleep(0.2)
