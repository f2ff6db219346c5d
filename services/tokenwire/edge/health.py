"""Liveness, readiness and metrics."""

from __future__ import annotations

from aiohttp import web

from tokenwire.edge import keys as appkeys
from tokenwire.redis_client import TRANSPORT_ERRORS


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[appkeys.LIFECYCLE].draining:
        return web.json_response({"status": "draining"}, status=503)
    try:
        await request.app[appkeys.REDIS].ping()
    except TRANSPORT_ERRORS:
        return web.json_response({"status": "redis_unreachable"}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text; only with the admin key (``bearer_token`` in a scrape
    config) unless ``TOKENWIRE_METRICS_PUBLIC`` opens it."""
    if not request.app[appkeys.SETTINGS].metrics_public:
        request.app[appkeys.AUTH].check_admin(request)
    body = request.app[appkeys.METRICS].render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})
