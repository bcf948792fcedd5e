"""`/`: NVIDIA's web client from the checkpoint's dist.tgz, or a redirect to the talk page without one.

The archive: found like voices.tgz (local and hub layouts), extracted once beside it and safely.
The routes: the page, its assets with the content types browsers insist on, and, on a live Serve
fleet, the page and assets still served while every session slot is taken.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tarfile
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from serve_helpers import GUARD_S, run, status, wait_until
from serve_on_loopback import loopback_fleet
from plexray.errors import CheckpointError
from plexray.model import reference
from plexray.serve.app.web_client import TALK_PAGE, assets_app, bundle_directory, page_route

PAGE = b"<!doctype html><title>stand-in</title><script type='module' src='/assets/app-1a2b.js'></script>"
ASSETS = {"app-1a2b.js": b"console.log('stand-in');", "style-3c4d.css": b"body {}",
          "decoderWorker.min.wasm": b"\x00asm\x01\x00\x00\x00"}


def write_dist_tgz(archive: Path, members: dict[str, bytes | Path]) -> Path:
    """A dist.tgz with these members: path inside the archive -> file bytes, or a Path for a symlink to it."""
    with tarfile.open(archive, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, Path):
                info.type, info.linkname = tarfile.SYMTYPE, str(content)
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return archive


def standin_bundle(directory: Path) -> Path:
    """NVIDIA's layout at toy size: dist/index.html and dist/assets/."""
    members = {"dist/index.html": PAGE, **{f"dist/assets/{name}": data for name, data in ASSETS.items()}}
    return write_dist_tgz(directory / reference.WEB_CLIENT_FILE, members)


def copy_with_web_client(demo_checkpoint: Path, target: Path) -> Path:
    shutil.copytree(demo_checkpoint, target, ignore=shutil.ignore_patterns("*.extracted"))
    standin_bundle(target)
    return target


# ----- finding and extracting dist.tgz -----------------------------------------------------------
def test_local_checkpoint_finds_dist_tgz_and_without_it_has_none(demo_checkpoint, tmp_path):
    assert reference.resolve(str(demo_checkpoint)).web_client is None
    checkpoint = copy_with_web_client(demo_checkpoint, tmp_path / "checkpoint")
    assert reference.resolve(str(checkpoint)).web_client == checkpoint / "dist.tgz"
    assert reference.resolve_web_client(str(checkpoint)) == checkpoint / "dist.tgz"


def test_hub_checkpoint_finds_dist_tgz_and_the_web_replica_fetches_nothing_else(
        demo_checkpoint, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from replica import make_hub_cache

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    checkpoint = copy_with_web_client(demo_checkpoint, tmp_path / "checkpoint")
    make_hub_cache(tmp_path / "hub", "nvidia/personaplex-7b-v1", checkpoint)
    files = reference.resolve("hf://nvidia/personaplex-7b-v1", cache_dir=str(tmp_path / "hub"))
    assert files.web_client is not None and files.web_client.name == "dist.tgz" and "snapshots" in str(files.web_client)
    # A cache holding dist.tgz alone (no model files) is enough for resolve_web_client.
    make_hub_cache(tmp_path / "web-only", "nvidia/personaplex-7b-v1", checkpoint, files=["dist.tgz"])
    archive = reference.resolve_web_client("hf://nvidia/personaplex-7b-v1", cache_dir=str(tmp_path / "web-only"))
    assert archive is not None and archive.read_bytes() == (checkpoint / "dist.tgz").read_bytes()
    assert reference.resolve_web_client("hf://nvidia/personaplex-7b-v1", cache_dir=str(tmp_path / "empty")) is None


def test_extraction_happens_once_beside_the_archive(tmp_path):
    archive = standin_bundle(tmp_path)
    bundle = reference.extract_web_client(archive)
    assert bundle == tmp_path / "dist.tgz.extracted" / "dist"
    assert (bundle / "index.html").read_bytes() == PAGE
    assert sorted(path.name for path in (bundle / "assets").iterdir()) == sorted(ASSETS)
    (bundle / "index.html").write_bytes(b"edited")  # a second call reuses the extraction, no rewrite
    assert reference.extract_web_client(archive) == bundle and (bundle / "index.html").read_bytes() == b"edited"


def test_extraction_that_loses_a_race_uses_the_winners_copy_and_leaves_no_debris(tmp_path, monkeypatch):
    archive = standin_bundle(tmp_path)
    extract = tarfile.TarFile.extractall
    raced = []

    def extract_while_another_process_finishes_first(self, *args, **kwargs):
        if not raced:  # another replica completes its extraction while this one is mid-way
            raced.append(True)
            winner = reference.extract_web_client(archive)
            (winner / "index.html").write_bytes(b"the winner's copy")
        return extract(self, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extractall", extract_while_another_process_finishes_first)
    bundle = reference.extract_web_client(archive)
    assert raced and (bundle / "index.html").read_bytes() == b"the winner's copy"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dist.tgz", "dist.tgz.extracted"]


@pytest.mark.parametrize("members, message, left", [
    (None, "cannot extract the web client", []),  # not a tar archive at all
    ({"dist/index.html": PAGE, "../escape.js": b"x"}, "cannot extract the web client", []),  # outside the target
    ({"dist/index.html": PAGE, "dist/assets/passwd": Path("/etc/passwd")}, "cannot extract the web client", []),
    ({"index.html": PAGE}, "expected dist/index.html", ["dist.tgz.extracted"]),  # not NVIDIA's layout
], ids=["corrupt", "dotdot", "link-out", "no-dist-dir"])
def test_bad_archives_are_refused_naming_the_file(tmp_path, members, message, left):
    archive = tmp_path / "dist.tgz"
    if members is None:
        archive.write_bytes(b"this is not a gzipped tar archive")
    else:
        write_dist_tgz(archive, members)
    with pytest.raises(CheckpointError, match=message) as refused:
        reference.extract_web_client(archive)
    assert str(archive) in str(refused.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dist.tgz", *left]  # no half-extracted debris


# ----- the routes ---------------------------------------------------------------------------------
def get(app, path: str) -> httpx.Response:
    """GET on an ASGI app in-process, as a browser would (no redirects followed)."""
    async def request():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://plexray") as client:
            return await client.get(path)

    return asyncio.run(request())


def test_without_a_bundle_the_root_redirects_to_the_talk_page_and_assets_are_404():
    answer = get(Starlette(routes=[page_route(None)]), "/")
    assert answer.status_code == 307 and answer.headers["location"] == TALK_PAGE
    assert get(assets_app(None), "/app.js").status_code == 404


def test_the_bundle_is_served_with_browser_content_types(tmp_path):
    bundle = bundle_directory(standin_bundle(tmp_path))
    page = get(Starlette(routes=[page_route(bundle)]), "/?worker_addr=gpu-7.example:8998")
    assert page.status_code == 200 and page.content == PAGE
    assert page.headers["content-type"].startswith("text/html")
    assets = assets_app(bundle)
    for name, content_type in [("app-1a2b.js", "text/javascript"), ("style-3c4d.css", "text/css"),
                               ("decoderWorker.min.wasm", "application/wasm")]:
        answer = get(assets, f"/{name}")
        assert answer.status_code == 200 and answer.content == ASSETS[name]
        assert answer.headers["content-type"].split(";")[0] == content_type
    assert get(assets, "/missing.js").status_code == 404


# ----- on Serve: the page loads while every session slot is taken ---------------------------------
@pytest.fixture(scope="module")
def web_fleet(ray_cluster, demo_checkpoint, tmp_path_factory):
    """The three applications on a checkpoint with dist.tgz: one replica with one session slot."""
    checkpoint = copy_with_web_client(demo_checkpoint, tmp_path_factory.mktemp("web-fleet") / "checkpoint")
    with loopback_fleet([f"model.checkpoint={checkpoint}", "serve.sessions_per_replica=1", "serve.num_cpus=0.5",
                         "serve.autoscaling={min_replicas: 1, max_replicas: 1}", "serve.status_report_s=0.5"],
                        web_client=True) as urls:
        yield urls


def test_page_and_assets_load_while_every_session_slot_is_taken(web_fleet):
    from plexray.serve.app.clients import ChatClient

    async def with_the_only_slot_taken():
        async with ChatClient.connect(web_fleet["ws"] + "/api/chat") as chat:
            await asyncio.wait_for(chat.handshake(), GUARD_S)
            await asyncio.to_thread(wait_until, lambda: status(web_fleet)["live_sessions"] == 1, GUARD_S,
                                    "the ledger to count the session")
            fleet = status(web_fleet)
            assert fleet["live_sessions"] == fleet["capacity"] == 1
            async with httpx.AsyncClient(base_url=web_fleet["http"], timeout=GUARD_S) as browser:
                page = await browser.get("/?worker_addr=127.0.0.1:8998")
                script = await browser.get("/assets/app-1a2b.js")
                wasm = await browser.get("/assets/decoderWorker.min.wasm")
                missing = await browser.get("/assets/missing.js")
            return page, script, wasm, missing

    page, script, wasm, missing = run(with_the_only_slot_taken())
    assert page.status_code == 200 and page.content == PAGE
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
    assert missing.status_code == 404
