"""CORS and the WebSocket ``Origin`` check, from one allowlist (``TOKENWIRE_CORS_ORIGINS``).

CORS is aiohttp-cors's (preflights, allowed and exposed headers), applied when
a response is prepared — so it reaches SSE responses too, whose headers are
sent before the handler returns. An empty list means same-origin only: no
CORS headers at all, and a WebSocket only from the edge's own origin.

Browsers do not apply CORS to WebSockets: any page may open one to any host,
with its cookies. The handshake's ``Origin`` is checked here instead (403);
a client that sends no ``Origin`` is not a browser and is let through to the
credential check.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp_cors
from aiohttp import web

from tokenwire.errors import Forbidden
from tokenwire.settings import Settings

#: What a browser app on an allowed origin may send and read.
ALLOW_HEADERS = ("Authorization", "Content-Type", "Last-Event-ID", "Idempotency-Key", "Accept")
EXPOSE_HEADERS = ("X-Stream-ID", "Retry-After", "Location")


def setup_cors(app: web.Application, settings: Settings, routes: list[web.AbstractRoute]) -> None:
    """Allow ``settings.cors_origins`` on ``routes`` (the public API's)."""
    if not settings.cors_origins:
        return
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=False,  # credentials travel as a header or ?token=, never cookies
        allow_headers=ALLOW_HEADERS, expose_headers=EXPOSE_HEADERS,
        allow_methods=["GET", "POST"], max_age=600)
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in settings.cors_origins})
    for route in routes:
        cors.add(route)
    resources = {route.resource for route in routes}

    async def vary_on_origin(request: web.Request, response: web.StreamResponse) -> None:
        # The answer's Access-Control-Allow-Origin depends on the request's Origin.
        if request.match_info.route.resource in resources:
            response.headers.add("Vary", "Origin")

    app.on_response_prepare.append(vary_on_origin)


def check_websocket_origin(request: web.Request, settings: Settings) -> None:
    """403 for a browser page on an origin that is neither allowed nor the edge's own."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    if origin.lower() in settings.cors_origins or _netloc(origin) == (request.host or "").lower():
        return
    raise Forbidden("origin_not_allowed", "WebSocket connections from this origin are not allowed")


def _netloc(origin: str) -> str | None:
    """``host[:port]`` of an ``Origin`` header; None for one that is not a URL."""
    try:
        return urlsplit(origin).netloc.lower()
    except ValueError:  # e.g. "http://[": an unclosed IPv6 literal
        return None
