"""What the edge serves to browsers besides the API: the demo page, its assets,
and the JavaScript client (``/v1/client.js``).

The demo page runs under a strict Content-Security-Policy: no inline script or
style, nothing from another origin, no framing (clickjacking), no referrer.
``client.js`` is an ES module other origins may import (CORS ``*``: it is
public and carries no credentials), cached briefly and revalidated by ETag.
Every response of the edge says ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).with_name("static")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEMO_CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",  # fetch, EventSource, and (CSP3) the same host's WebSocket
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
_PAGE_HEADERS = {
    "Content-Security-Policy": DEMO_CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_ASSETS = {  # name → content type; served with the page's headers
    "demo.js": "text/javascript; charset=utf-8",
    "demo.css": "text/css; charset=utf-8",
}
_CLIENT_HEADERS = {
    "Content-Type": "text/javascript; charset=utf-8",
    "Cache-Control": "public, max-age=300",
    "Access-Control-Allow-Origin": "*",
    "Cross-Origin-Resource-Policy": "cross-origin",
}


async def demo_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={
        **_PAGE_HEADERS, "Content-Type": "text/html; charset=utf-8"})


def demo_asset(name: str, content_type: str) -> Handler:
    async def asset(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / name, headers={**_PAGE_HEADERS,
                                                         "Content-Type": content_type})

    return asset


_ADMIN_ASSETS = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


async def admin_page(request: web.Request) -> web.FileResponse:
    """The operator's console (served only with an admin key configured). The
    page holds nothing but code: every figure comes from the admin API, which
    it calls with the admin key the operator types in."""
    return web.FileResponse(STATIC / "admin.html", headers={
        **_PAGE_HEADERS, "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-store"})


async def admin_asset(request: web.Request) -> web.FileResponse:
    content_type = _ADMIN_ASSETS.get(request.match_info["name"])
    if content_type is None:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC / request.match_info["name"],
                            headers={**_PAGE_HEADERS, "Content-Type": content_type})


async def client_js(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "client.js", headers=_CLIENT_HEADERS)


async def nosniff(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: no response is ever sniffed into another type."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def setup_pages(app: web.Application) -> None:
    app.router.add_get("/", demo_page)
    for name, content_type in _ASSETS.items():  # one plain route each, as documented
        app.router.add_get(f"/{name}", demo_asset(name, content_type))
    app.router.add_get("/v1/client.js", client_js)
    app.on_response_prepare.append(nosniff)
