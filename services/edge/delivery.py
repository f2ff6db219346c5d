"""The transports: SSE and WebSocket are thin adapters over a ``Follower``.

They parse nothing but the resume position (done by the handler), subscribe,
and write frames. A Redis failure mid-stream ends the response without a
terminal event: the client resumes from its cursor on any edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random

from aiohttp import WSMsgType, web
from aiohttp_sse import sse_response

from tokenwire.edge import keys as appkeys
from tokenwire.edge.errors import WS_NORMAL, WS_SERVICE_RESTART
from tokenwire.edge.follower import Follower
from tokenwire.redis_client import TRANSPORT_ERRORS

log = logging.getLogger(__name__)


def jittered_retry_ms(base_ms: int) -> int:
    """Spread reconnects: ``base`` ±50 %."""
    return int(base_ms * random.uniform(0.5, 1.5))


async def send_sse(
    request: web.Request, follower: Follower, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    app = request.app
    settings = app[appkeys.SETTINGS]
    metrics = app[appkeys.METRICS]
    lifecycle = app[appkeys.LIFECYCLE]
    task = asyncio.current_task()
    if task is not None:
        lifecycle.deliveries.add(task)
    metrics.connections.labels("sse").inc()
    try:
        async with sse_response(
            request, ping_interval=settings.sse_ping_seconds, headers=headers,
            allow_all_methods=True,  # POST /v1/streams may answer with the stream itself
        ) as response:
            await response.write(f"retry: {jittered_retry_ms(settings.sse_retry_ms)}\r\n\r\n"
                                 .encode())
            try:
                async for event in follower.events():
                    await response.send(event.data, id=event.id, event=event.type)
                    metrics.events_sent.labels("sse").inc()
            except TRANSPORT_ERRORS as exc:
                log.warning("redis failed mid-stream, client will resume: %s", exc,
                            extra={"stream_id": follower.stream_id})
            except asyncio.CancelledError:
                if not lifecycle.draining:
                    raise
                # Draining: end the response cleanly; the client reconnects elsewhere.
                await response.write(
                    f"retry: {jittered_retry_ms(settings.sse_retry_ms)}\r\n\r\n".encode())
        return response
    finally:
        metrics.connections.labels("sse").dec()


async def send_websocket(
    request: web.Request, follower: Follower | None
) -> web.WebSocketResponse:
    """``follower`` None: the client already has everything; close normally."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    metrics = app[appkeys.METRICS]
    store = app[appkeys.STORE]
    ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat_seconds)
    await ws.prepare(request)
    if follower is None:
        await ws.close(code=WS_NORMAL, message=b"stream complete")
        return ws
    metrics.connections.labels("ws").inc()
    pump = asyncio.create_task(_pump_websocket(ws, follower, app))
    app[appkeys.LIFECYCLE].deliveries.add(pump)
    try:
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                command = json.loads(message.data)
            except ValueError:
                continue
            if isinstance(command, dict) and command.get("type") == "cancel":
                await store.cancel(follower.stream_id)
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        metrics.connections.labels("ws").dec()
    return ws


async def _pump_websocket(ws: web.WebSocketResponse, follower: Follower, app: web.Application
                          ) -> None:
    metrics = app[appkeys.METRICS]
    code, reason = WS_NORMAL, b"stream complete"
    try:
        async for event in follower.events():
            await ws.send_str(event.ws_frame())
            metrics.events_sent.labels("ws").inc()
    except TRANSPORT_ERRORS as exc:
        log.warning("redis failed mid-stream, client will resume: %s", exc)
        code, reason = WS_SERVICE_RESTART, b"broker unavailable, resume"
    except asyncio.CancelledError:
        if not app[appkeys.LIFECYCLE].draining:
            raise
        code, reason = WS_SERVICE_RESTART, b"edge restarting, resume"
    except ConnectionResetError:
        return
    await ws.close(code=code, message=reason)
