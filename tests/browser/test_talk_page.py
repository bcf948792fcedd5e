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
            return state

    import json

    state = json.loads(asyncio.run(session()))
    assert state["error"] is None
    assert state["audioChunksSent"] >= 10  # the fake microphone's speech went up
    assert state["state"] == "talking"
