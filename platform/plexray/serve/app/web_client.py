"""NVIDIA's web client (the checkpoint's dist.tgz), on the same host:port as /api/chat, as NVIDIA's server does.

Where each path is served, and why there:

  /assets/...  everything in the bundle but the page: the scripts, styles, the audio decoder worker
               and its wasm, icons. Application `{app_name}-web` (route prefix /assets), one light
               replica (no GPU, no CPU reserved) that holds no session slot.
  /            the page (index.html, about 1 KB), or without a bundle a redirect to plexray's own
               talk page /voice/talk. Served by the sessions application.

Serve hands a request to the application with the longest route prefix that matches, and every
request to a session replica, a page load included, takes one of that replica's
`max_ongoing_requests` slots: the slots that conversations hold for their whole length. So static
files belong on a light application of their own. The page itself cannot move there: only the
application at route prefix '/' is ever asked for '/', and that has to be the sessions
application, because its WebSocket endpoints sit under two top-level paths (/api/chat and
/ws/voice/{persona}) and an application has a single route prefix. The page is one short request
per visit; it takes one of the slots that every session replica keeps beyond its sessions (for
the waiting line, and `reject_headroom` to answer 'busy'), so it loads even when every session
slot is taken. It still needs a running session replica: while the first one starts, it waits.

NVIDIA's bundle (Vite's default layout) holds nothing else at its top level: index.html and
assets/. The client's `?worker_addr=host:port` is the page's own business: `/` ignores the query.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from plexray.model import reference

TALK_PAGE = "/voice/talk"  # plexray's own page, on the ops application (route prefix /voice)
ASSETS_ROUTE_PREFIX = "/assets"  # where the bundle's assets/ directory is served

# Browsers refuse a module script or a streamed wasm served with another type, and the content
# types come from the host's mime.types: pin the ones the browser is strict about.
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/css", ".css")


def bundle_directory(archive: Path | None) -> Path | None:
    """The extracted bundle (the directory holding index.html and assets/), or None without dist.tgz."""
    return reference.extract_web_client(archive) if archive is not None else None


def page_route(bundle: Path | None) -> Route:
    """GET / : the bundle's index.html, or a redirect to the talk page when the checkpoint has none."""
    if bundle is None:
        async def redirect_to_talk_page(request: Request) -> Response:
            return RedirectResponse(TALK_PAGE)

        return Route("/", redirect_to_talk_page)
    index = bundle / "index.html"

    async def page(request: Request) -> Response:
        return FileResponse(index, media_type="text/html; charset=utf-8")

    return Route("/", page)


def assets_app(bundle: Path | None) -> Starlette:
    """The bundle's assets/ directory, to be mounted at route prefix /assets; empty without a bundle."""
    assets = bundle / "assets" if bundle is not None else None
    if assets is None or not assets.is_dir():
        return Starlette()  # answers 404 to everything
    return Starlette(routes=[Mount("/", StaticFiles(directory=assets))])
