"""The talk page in headless Chromium: a fake microphone speaks, audio and text come back."""

from __future__ import annotations

import asyncio

import pytest
import sphn

from chromium import Browser, chromium_binary
from serve_on_loopback import loopback_fleet

pytestmark = pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed (make test installs it)")

OVERRIDES = ["serve.sessions_per_replica=1", "serve.num_cpus=0.5",
             "serve.autoscaling={min_replicas: 1, max_replicas: 1}"]


@pytest.fixture(scope="module")
def talk_server(ray_cluster, demo_checkpoint):
    with loopback_fleet([f"model.checkpoint={demo_checkpoint}", *OVERRIDES]) as urls:
        yield urls["http"]


def test_talk_page_round_trip(talk_server, tmp_path):
    from plexray.audio.espeak import synthesize

    microphone = tmp_path / "microphone.wav"
    sphn.write_wav(str(microphone), synthesize("Hello! Can I get a small black coffee, please?"), 24000)

    async def session():
        async with Browser(microphone) as browser:
            page = await browser.open(f"{talk_server}/voice/talk")
            personas = await page.wait_for("document.querySelectorAll('#persona option').length", timeout_s=30)
            assert personas >= 1
            await page.evaluate("document.getElementById('prompt').value = 'You sell coffee and love it.'")
            await page.evaluate("document.getElementById('start').click()")
            await page.wait_for("plexrayTalk.audioChunksReceived >= 25 && plexrayTalk.text.length > 0",
                                timeout_s=90)
            state = await page.evaluate("JSON.stringify(plexrayTalk)")
            await page.evaluate("document.getElementById('stop').click()")
            # The context field is for grounded personas only (the demo's have no knowledge base).
            assert await page.evaluate("document.getElementById('context').disabled") is True
            # Opened from another machine over plain http the page is not a secure context and the browser
            # withholds the microphone: the page says so instead of failing with a TypeError.
            await page.evaluate("Object.defineProperty(window, 'isSecureContext', {get: () => false}); "
                                "document.getElementById('start').click()")
            await page.wait_for("plexrayTalk.state === 'error'", timeout_s=10)
            insecure = await page.evaluate("plexrayTalk.error")
            return state, insecure

    import json

    state, insecure = asyncio.run(session())
    state = json.loads(state)
    assert "the microphone needs a secure page" in insecure and "https" in insecure
    assert state["error"] is None
    assert state["audioChunksSent"] >= 10  # the fake microphone's speech went up
    assert state["state"] == "talking"
