"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from redis.exceptions import RedisError

from tokenwire.edge import keys as appkeys
from tokenwire.redis_client import TRANSPORT_ERRORS

log = logging.getLogger(__name__)

#: A scrape does not wait longer than this for the queue figures.
QUEUE_READ_TIMEOUT_SECONDS = 1.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: not draining, Redis reachable now, and the hub's pub/sub
    connection open (an edge started while Redis was down gets there by itself)."""
    app = request.app
    if app[appkeys.LIFECYCLE].draining:
        return web.json_response({"status": "draining"}, status=503)
    if not await app[appkeys.REDIS_WATCH].check():
        return web.json_response({"status": "redis_unreachable"}, status=503)
    if not app[appkeys.HUB].connected:
        return web.json_response({"status": "starting"}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text; only with the metrics key (``authorization`` in a scrape
    config) unless ``TOKENWIRE_METRICS_PUBLIC`` opens it."""
    if not request.app[appkeys.SETTINGS].metrics_public:
        request.app[appkeys.AUTH].check_metrics(request)
    metrics = request.app[appkeys.METRICS]
    try:  # the queue gauges are read from Redis now; without it, they keep their last value
        async with asyncio.timeout(QUEUE_READ_TIMEOUT_SECONDS):
            await metrics.refresh()
    except (TimeoutError, *TRANSPORT_ERRORS, RedisError) as exc:
        log.debug("queue gauges not refreshed: %s", exc)
    body = metrics.render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})
