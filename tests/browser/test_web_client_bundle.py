"""NVIDIA's web client at `/`, as a new user gets it: a checkpoint with dist.tgz, the three Serve
applications with the default personas, a browser opening http://host:port/.

The checkpoint is the replica of the real repo (tests/replica.py). The bundle is a stand-in (standin_client/: index.html and assets/, NVIDIA's layout) that talks to
/api/chat exactly as NVIDIA's client does: same URL on the page's own host:port, same query string
(pad_mult=0, random seeds, voice_prompt=NATF0.pt), handshake, microphone as Ogg/Opus.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import sphn

from chromium import Browser, chromium_binary
from serve_on_loopback import loopback_fleet
from replica import REPLICA_ARCHITECTURE, write_personaplex_replica

pytestmark = pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed (make test installs it)")

STANDIN_CLIENT = Path(__file__).parent / "standin_client"
OVERRIDES = ["serve.sessions_per_replica=1", "serve.num_cpus=0.5",
             "serve.autoscaling={min_replicas: 1, max_replicas: 1}"]


@pytest.fixture(scope="module")
def checkpoint_with_web_client(tmp_path_factory) -> Path:
    """The replica of nvidia/personaplex-7b-v1 (tests/replica.py: NVIDIA's own NATF0.pt, moshi 0.1
    tensor names, no architecture in config.json) with the stand-in bundle as its dist.tgz."""
    return write_personaplex_replica(tmp_path_factory.mktemp("web-client") / "checkpoint", web_client=STANDIN_CLIENT)


@pytest.fixture(scope="module")
def web_client_server(ray_cluster, checkpoint_with_web_client):
    architecture = [f"model.{key}={json.dumps(value)}" for key, value in REPLICA_ARCHITECTURE.items()]
    with loopback_fleet([f"model.checkpoint={checkpoint_with_web_client}", *architecture, *OVERRIDES],
                        web_client=True) as urls:
        yield urls["http"]


def test_web_client_bundle_at_root_converses(web_client_server, tmp_path):
    from plexray.audio.espeak import synthesize

    microphone = tmp_path / "microphone.wav"
    sphn.write_wav(str(microphone), synthesize("Hello! Could you tell me something about the moon?"), 24000)

    async def session():
        async with Browser(microphone) as browser:
            page = await browser.open(f"{web_client_server}/")
            try:
                await page.wait_for("standinClient.failure || standinClient.closeCode !== null || "
                                    "(standinClient.audioMessagesReceived >= 25 && standinClient.text.length > 0 "
                                    "&& standinClient.oggPagesSent >= 50)", timeout_s=120)
            finally:
                # One evaluation for both: the page goes on receiving text between two of them.
                seen = json.loads(await page.evaluate(
                    "JSON.stringify({state: standinClient, shown: document.getElementById('transcript').textContent})"))
            return seen["state"], seen["shown"]

    state, shown = asyncio.run(session())
    # Refused (a 1008 close with the reason) or broken in the browser: say which, with the reason.
    assert state["failure"] is None and state["closeCode"] is None, state
    url = urlsplit(state["url"])
    assert (url.scheme, url.netloc, url.path) == ("ws", urlsplit(web_client_server).netloc, "/api/chat")
    query = dict(parse_qsl(url.query))
    assert list(query) == ["text_temperature", "text_topk", "audio_temperature", "audio_topk", "pad_mult",
                           "text_seed", "audio_seed", "repetition_penalty_context", "repetition_penalty",
                           "text_prompt", "voice_prompt"]
    assert query["pad_mult"] == "0" and query["voice_prompt"] == "NATF0.pt" and query["repetition_penalty"] == "1"
    assert state["handshake"] and state["phase"] == "talking"
    assert state["oggPagesSent"] >= 50  # the fake microphone went up as Ogg/Opus after the handshake
    assert state["audioMessagesReceived"] >= 25 and state["text"]  # the agent's audio and text came back
    assert shown == state["text"]  # and the page shows them
