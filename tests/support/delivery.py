"""SSE and WebSocket delivery over the in-memory broker: the real transports,
``ClientStream`` and hub on an aiohttp app, without Redis or the rest of the edge."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import ClientResponse, web

from tokenwire.client import ClientEvent, parse_sse
from tokenwire.cursor import Cursor
from tokenwire.edge import keys as appkeys
from tokenwire.edge.delivery import send_sse, send_websocket
from tokenwire.edge.follower import Follower, StreamComplete
from tokenwire.edge.keepalive import Heartbeat
from tokenwire.edge.memory_broker import MemoryBroker
from tokenwire.edge.metrics import EdgeMetrics
from tokenwire.settings import Settings


def delivery_app(broker: MemoryBroker, settings: Settings) -> web.Application:
    """``GET /streams/{id}/events`` (SSE) and ``/streams/{id}/ws`` over ``broker``;
    the broker is started and closed with the app."""
    app = web.Application()
    app[appkeys.SETTINGS] = settings
    app[appkeys.METRICS] = EdgeMetrics()
    app[appkeys.LIFECYCLE] = appkeys.Lifecycle()
    app[appkeys.HEARTBEAT] = Heartbeat(settings.sse_ping_seconds)
    app[appkeys.WS_HEARTBEAT] = Heartbeat(settings.ws_heartbeat_seconds)
    app[appkeys.BROKER] = broker

    async def opened(request: web.Request, header: bool) -> Follower:
        raw = request.headers.get("Last-Event-ID") if header else None
        position = Cursor.parse_optional(raw or request.query.get("last_event_id"))
        return await Follower.open(broker, None, request.match_info["stream_id"], position,
                                   want_snapshot=request.query.get("snapshot") == "1",
                                   queue_size=settings.subscriber_queue_size)

    async def events(request: web.Request) -> web.StreamResponse:
        try:
            follower = await opened(request, header=True)
        except StreamComplete:
            return web.Response(status=204)
        return await send_sse(request, follower)

    async def websocket(request: web.Request) -> web.StreamResponse:
        try:
            follower: Follower | None = await opened(request, header=False)
        except StreamComplete:
            follower = None

        async def cancel() -> None:
            return None

        return await send_websocket(request, follower, cancel)

    async def lifetime(_: web.Application) -> AsyncIterator[None]:
        broker.start()
        yield
        await broker.close()

    app.router.add_get("/streams/{stream_id}/events", events)
    app.router.add_get("/streams/{stream_id}/ws", websocket)
    app.cleanup_ctx.append(lifetime)
    return app


async def sse_events(response: ClientResponse) -> AsyncIterator[ClientEvent]:
    """Every message of an SSE response, ``reconnect`` notices included."""
    assert response.status == 200, await response.text()
    async for event_id, event_type, data in parse_sse(response.content):
        yield ClientEvent(event_id or "", event_type, json.loads(data))


def running(broker: MemoryBroker, *words: str) -> str:
    """A stream begun in ``broker`` (its ``start`` is seq 1), with ``words`` appended."""
    stream_id = broker.create()
    broker.begin(stream_id)
    for word in words:
        broker.append(stream_id, word)
    return stream_id


def frame_event(data: str) -> ClientEvent:
    """A WebSocket frame ``{"id", "type", ...data}`` as a client event."""
    frame: dict[str, Any] = json.loads(data)
    return ClientEvent(frame.pop("id"), frame.pop("type"), frame)
