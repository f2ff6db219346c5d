"""What the edge serves to browsers besides the API: the demo page under a strict
CSP, its assets, and ``/v1/client.js`` as a module other origins may import."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from tokenwire.edge.app import create_app
from tokenwire.settings import Settings


async def test_the_demo_page_has_security_headers(
        redis: Redis, settings: Settings, aiohttp_client: Callable[..., Any]) -> None:
    client = await aiohttp_client(create_app(settings))
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    csp = dict(part.strip().split(" ", 1)
               for part in page.headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'" and "unsafe" not in str(csp)
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = await page.text()
    assert "<script>" not in html and "<style>" not in html  # nothing inline for CSP to refuse
    for asset, content_type in (("/demo.js", "text/javascript"), ("/demo.css", "text/css")):
        response = await client.get(asset)
        assert response.status == 200 and response.content_type == content_type
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get("/demo.html")).status == 404
    # every answer, the API's included, is never sniffed
    assert (await client.get("/healthz")).headers["X-Content-Type-Options"] == "nosniff"


async def test_client_js_is_a_cacheable_module_any_origin_may_import(
        redis: Redis, settings: Settings, aiohttp_client: Callable[..., Any]) -> None:
    client = await aiohttp_client(create_app(settings))
    response = await client.get("/v1/client.js", headers={"Origin": "https://app.example"})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    assert "export class TokenwireStream" in await response.text()
    again = await client.get("/v1/client.js", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304
