"""SSE and WebSocket: thin adapters that run one ``ClientStream`` and end as it says.

How each ``Disconnect`` reason looks to the client:

- ``DONE``: the terminal event was sent; SSE ends / WebSocket closes 1000;
- anything else ends an SSE response with a ``reconnect`` notice (``retry:``,
  ``event: reconnect``, ``{"reason", "message"}``, no ``id``: the client's
  cursor stays at what it received; see ``sse``), and the client resumes from
  its cursor on any edge: ``slow_consumer`` (WebSocket 4408),
  ``redis_unavailable`` after ``edge_redis_outage_seconds`` of holding the
  client (1011), ``record_missing`` (1011: the reconnect learns whether the
  record is being rebuilt), ``history_expired`` (1000: the reconnect gets 204),
  ``draining`` with a ``retry:`` spread over the drain window (1012);
- ``CLIENT_GONE``: nothing to say.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from tokenwire.edge import keys as appkeys
from tokenwire.edge.client_stream import ClientStream, Disconnect
from tokenwire.edge.delivery_meter import DeliveryMeter
from tokenwire.edge.errors import WS_NORMAL, WS_SERVICE_RESTART, WS_SLOW_CONSUMER, WS_TRY_AGAIN
from tokenwire.edge.follower import Follower
from tokenwire.edge.keepalive import abort_unacknowledged_after
from tokenwire.edge.sse import SseResponse, jittered_retry_ms, reconnect_notice, retry_field
from tokenwire.edge.transports import SseTransport, WebSocketTransport
from tokenwire.settings import Settings

log = logging.getLogger(__name__)

#: What an early end says, by reason (SSE notice message; WebSocket close code and reason).
_ENDINGS: dict[Disconnect, tuple[str, int, bytes]] = {
    Disconnect.SLOW_CONSUMER: ("the connection fell behind", WS_SLOW_CONSUMER,
                               b"slow consumer, resume from your cursor"),
    Disconnect.BROKER_UNAVAILABLE: ("the message broker is unreachable", WS_TRY_AGAIN,
                                    b"broker unavailable, resume"),
    Disconnect.RECORD_MISSING: ("Redis lost this stream's record", WS_TRY_AGAIN,
                                b"stream record missing, resume"),
    Disconnect.HISTORY_EXPIRED: ("this stream's events expired; its text is in its status",
                                 WS_NORMAL, b"stream complete"),
    Disconnect.DRAINING: ("this edge is restarting", WS_SERVICE_RESTART,
                          b"edge restarting, resume"),
    Disconnect.DONE: ("", WS_NORMAL, b"stream complete"),
    Disconnect.CLIENT_GONE: ("", WS_NORMAL, b""),
}


def drain_retry_ms(settings: Settings) -> int:
    """While draining: spread reconnects over the whole drain window."""
    return int(random.uniform(0.05, 1.0) * max(settings.drain_seconds, 0.1) * 1000)


def _meter(request: web.Request, follower: Follower, kind: str) -> DeliveryMeter:
    """The connection's share of the metrics; without Redis' clock (an app
    without one, or ``delivery_metrics`` off) no lag nor time to first token."""
    app = request.app
    clock = app.get(appkeys.CLOCK) if app[appkeys.SETTINGS].delivery_metrics else None
    return DeliveryMeter(app[appkeys.METRICS], kind, clock,
                         created_at_ms=follower.created_at_ms)


def _started(request: web.Request, follower: Follower,
             transport: SseTransport | WebSocketTransport, kind: str) -> ClientStream:
    """The client's stream, registered where the edge finds it (heartbeat,
    draining, metrics). Not a coroutine: an idle connection holds no frame
    for it."""
    app = request.app
    stream = ClientStream(follower.broker, follower.stream_id, follower.position(), transport,
                          app[appkeys.SETTINGS], watch=follower.watching(), meter=transport.meter)
    app[appkeys.METRICS].connections.labels(kind).inc()
    app[appkeys.HEARTBEAT if kind == "sse" else appkeys.WS_HEARTBEAT].add(transport)
    app[appkeys.LIFECYCLE].join(stream)
    return stream


def _ended(request: web.Request, stream: ClientStream,
           transport: SseTransport | WebSocketTransport, kind: str,
           reason: Disconnect | None) -> None:
    """Unregister the client's stream (``reason`` None: it was cancelled)."""
    app = request.app
    metrics = app[appkeys.METRICS]
    app[appkeys.LIFECYCLE].leave(stream)
    app[appkeys.HEARTBEAT if kind == "sse" else appkeys.WS_HEARTBEAT].discard(transport)
    metrics.connections.labels(kind).dec()
    metrics.frames_merged.inc(stream.frames_merged)
    if reason is Disconnect.SLOW_CONSUMER:
        log.info("slow consumer disconnected", extra={"stream_id": stream.stream_id})
        metrics.slow_consumers.inc()
    elif reason is Disconnect.BROKER_UNAVAILABLE:
        log.warning("redis failed mid-stream, client will resume",
                    extra={"stream_id": stream.stream_id})


async def send_sse(
    request: web.Request, follower: Follower, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    settings = request.app[appkeys.SETTINGS]
    response = SseResponse(headers, settings.send_timeout_seconds)
    writer = await response.prepare(request)
    assert writer is not None  # a fresh response: prepare returns its writer
    # retry: rides in the first event's block, whichever path writes it first.
    transport = SseTransport(request, response, writer, _meter(request, follower, "sse"),
                             head=retry_field(jittered_retry_ms(settings.sse_retry_ms)))
    stream, reason = _started(request, follower, transport, "sse"), None
    try:
        reason = await stream.run()
    finally:
        _ended(request, stream, transport, "sse", reason)
    if reason in (Disconnect.DONE, Disconnect.CLIENT_GONE):
        return response
    retry_ms = (drain_retry_ms(settings) if reason is Disconnect.DRAINING
                else jittered_retry_ms(settings.sse_retry_ms))
    notice = reconnect_notice(reason.value, _ENDINGS[reason][0], retry_ms)
    with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
        async with asyncio.timeout(settings.send_timeout_seconds):
            await response.write(notice)
    return response


async def send_websocket(
    request: web.Request, follower: Follower | None, cancel: Callable[[], Awaitable[None]]
) -> web.WebSocketResponse:
    """``follower`` None: the client already has everything; close normally.
    ``cancel``: what a ``{"type": "cancel"}`` message does (the caller checks
    that the client may)."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    # No permessage-deflate: token frames are tens of bytes, and uncompressed
    # frames can be encoded once per event and written from the hub (``transports``).
    # No aiohttp heartbeat: the edge's one WebSocket ``Heartbeat`` pings, and the
    # kernel drops a peer that stops acknowledging (see ``keepalive``).
    ws = web.WebSocketResponse(heartbeat=None, compress=False)
    writer = await ws.prepare(request)
    if follower is None:
        await ws.close(code=WS_NORMAL, message=b"stream complete")
        return ws
    abort_unacknowledged_after(request, settings.send_timeout_seconds)
    assert writer is not None  # a fresh response: prepare returns its writer
    transport = WebSocketTransport(request, ws, writer, _meter(request, follower, "ws"))
    pump = asyncio.create_task(_pump_websocket(request, ws, follower, transport))
    try:
        async for message in ws:  # the client's messages; ends when it closes
            if message.type != WSMsgType.TEXT:
                continue
            try:
                command = json.loads(message.data)
            except (ValueError, RecursionError):  # not JSON, or nested absurdly deep
                continue
            if isinstance(command, dict) and command.get("type") == "cancel":
                await cancel()
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
    return ws


async def _pump_websocket(request: web.Request, ws: web.WebSocketResponse, follower: Follower,
                          transport: WebSocketTransport) -> None:
    settings = request.app[appkeys.SETTINGS]
    stream, reason = _started(request, follower, transport, "ws"), None
    try:
        reason = await stream.run()
    finally:
        _ended(request, stream, transport, "ws", reason)
    if reason is Disconnect.CLIENT_GONE:
        return
    _, code, message = _ENDINGS[reason]
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(settings.send_timeout_seconds):
            await ws.close(code=code, message=message)
