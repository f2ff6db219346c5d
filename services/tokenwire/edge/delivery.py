"""The transports: SSE and WebSocket are thin adapters over one relay.

``relay`` runs the follower into a per-connection ``Outbox`` (merging token
frames for a client that falls behind) and writes the outbox to the socket
with a send timeout. Outcomes, and what the client sees:

- the terminal event was sent: SSE ends / WebSocket closes 1000;
- anything else ends an SSE response with a ``reconnect`` notice (``retry:``,
  ``event: reconnect``, ``{"reason", "message"}``, no ``id``: the client's
  cursor stays at what it received; see ``sse``), and the client resumes
  from its cursor on any edge:
  - the client is a slow consumer: reason ``slow_consumer`` / WebSocket 4408;
  - Redis failed mid-stream: the client is held (pings continue) while the
    follower retries; after ``edge_redis_outage_seconds``: reason
    ``redis_unavailable`` / WebSocket 1011;
  - the stream's record vanished (Redis restarted empty): reason
    ``record_missing`` / WebSocket 1011; the reconnect learns whether it is
    being rebuilt;
  - the edge drains: reason ``draining``, with a ``retry:`` spread over the
    drain window / WebSocket 1012.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from tokenwire.edge import keys as appkeys
from tokenwire.edge.direct import DirectSse, DirectWebSocket, DirectWriter
from tokenwire.edge.errors import WS_NORMAL, WS_SLOW_CONSUMER, WS_TRY_AGAIN
from tokenwire.edge.follower import Follower, RecordMissing
from tokenwire.edge.keepalive import abort_unacknowledged_after
from tokenwire.edge.outbox import Outbox, SlowConsumer
from tokenwire.edge.sse import SseResponse, jittered_retry_ms, reconnect_notice, retry_field
from tokenwire.events import Event
from tokenwire.redis_client import TRANSPORT_ERRORS
from tokenwire.settings import Settings

log = logging.getLogger(__name__)


def drain_retry_ms(settings: Settings) -> int:
    """While draining: spread reconnects over the whole drain window."""
    return int(random.uniform(0.05, 1.0) * max(settings.drain_seconds, 0.1) * 1000)


async def relay(follower: Follower, settings: Settings,
                send: Callable[[list[Event]], Awaitable[None]],
                socket: DirectWriter | None = None) -> Outbox:
    """Deliver the follower's events through an outbox until the terminal one.
    ``send`` gets everything queued at once (one socket write for SSE).
    ``socket``: in-order live events that find the outbox empty and the
    writer idle are written at once, from the hub's dispatch (see ``direct``).
    Raises ``SlowConsumer``, or a Redis transport error."""
    outbox = Outbox(settings.client_backlog_chars, settings.slow_consumer_seconds)
    writer_busy = False  # a batch taken from the outbox is not all written yet

    def take_live(event: Event) -> bool:
        # Order: nothing may overtake what the outbox or the writer holds.
        if (socket is not None and not writer_busy and not outbox
                and socket.write_now(event)):
            return True
        return outbox.offer(event)

    follower.send_live_to(take_live)  # in-order live events skip the filler task

    async def fill() -> None:
        # While Redis is unreachable the client is held (pings go on) and the
        # follower retries from its position; past the outage budget, it fails.
        outage_began: float | None = None
        while True:
            try:
                async for event in follower.events():
                    outage_began = None
                    await outbox.put(event)
                return
            except (SlowConsumer, RecordMissing) as exc:
                outbox.fail(exc)
                return
            except TRANSPORT_ERRORS as exc:
                now = time.monotonic()
                outage_began = outage_began or now
                if now - outage_began >= settings.edge_redis_outage_seconds:
                    outbox.fail(exc)
                    return
                log.warning("redis unavailable mid-stream, holding the client: %s", exc,
                            extra={"stream_id": follower.stream_id})
                await asyncio.sleep(random.uniform(0.5, 1.5))

    filler = asyncio.create_task(fill(), name=f"follow-{follower.stream_id}")
    try:
        while True:
            batch = await outbox.take()
            writer_busy = True
            try:
                async with asyncio.timeout(settings.send_timeout_seconds):
                    await send(batch)
            except TimeoutError as exc:  # the socket did not take one write in time
                raise SlowConsumer() from exc
            finally:
                writer_busy = False
            if batch[-1].is_terminal:  # the follower stops after it: always last
                return outbox
    finally:
        if socket is not None:
            socket.open = False  # the response may end next: no write may follow
        filler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await filler


async def send_sse(
    request: web.Request, follower: Follower, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    app = request.app
    settings = app[appkeys.SETTINGS]
    metrics = app[appkeys.METRICS]
    lifecycle = app[appkeys.LIFECYCLE]
    heartbeat = app[appkeys.HEARTBEAT]
    task = asyncio.current_task()
    if task is not None:
        lifecycle.sse_tasks.add(task)
    sent = metrics.events_sent_to("sse")
    response = SseResponse(headers, settings.send_timeout_seconds)
    await response.prepare(request)
    # retry: rides in the first event's block, whichever path writes it first.
    socket = DirectSse(request, response, sent,
                       head=retry_field(jittered_retry_ms(settings.sse_retry_ms)))

    async def send(batch: list[Event]) -> None:
        await response.write(socket.take_head() + b"".join(e.sse_bytes() for e in batch))
        sent.inc(len(batch))

    metrics.connections.labels("sse").inc()
    heartbeat.add(socket)
    retry_ms = jittered_retry_ms(settings.sse_retry_ms)
    try:
        try:
            outbox = await relay(follower, settings, send, socket)
            metrics.frames_merged.inc(outbox.merged)
            return response
        except SlowConsumer:
            log.info("slow consumer disconnected", extra={"stream_id": follower.stream_id})
            metrics.slow_consumers.inc()
            notice = reconnect_notice("slow_consumer", "the connection fell behind", retry_ms)
        except ConnectionResetError:
            return response  # the client left (before TRANSPORT_ERRORS: a ConnectionError)
        except TRANSPORT_ERRORS as exc:
            log.warning("redis failed mid-stream, client will resume: %s", exc,
                        extra={"stream_id": follower.stream_id})
            notice = reconnect_notice("redis_unavailable", "the message broker is unreachable",
                                      retry_ms)
        except RecordMissing:
            log.warning("stream record vanished mid-stream",
                        extra={"stream_id": follower.stream_id})
            notice = reconnect_notice("record_missing", "Redis lost this stream's record",
                                      retry_ms)
        except asyncio.CancelledError:
            if not lifecycle.draining or task is None:
                raise
            # The drain cancelled us on purpose: absorb it so the response ends properly.
            task.uncancel()
            notice = reconnect_notice("draining", "this edge is restarting",
                                      drain_retry_ms(settings))
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            async with asyncio.timeout(settings.send_timeout_seconds):
                await response.write(notice)
        return response
    finally:
        heartbeat.discard(socket)
        metrics.connections.labels("sse").dec()


async def send_websocket(
    request: web.Request, follower: Follower | None, cancel: Callable[[], Awaitable[None]]
) -> web.WebSocketResponse:
    """``follower`` None: the client already has everything; close normally.
    ``cancel``: what a ``{"type": "cancel"}`` message does (the caller checks
    that the client may)."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    metrics = app[appkeys.METRICS]
    # No permessage-deflate: token frames are tens of bytes, and uncompressed
    # frames can be encoded once per event and written from the hub (``direct``).
    # No aiohttp heartbeat: the edge's one WebSocket ``Heartbeat`` pings, and the
    # kernel drops a peer that stops acknowledging (see ``keepalive``).
    ws = web.WebSocketResponse(heartbeat=None, compress=False)
    await ws.prepare(request)
    if follower is None:
        await ws.close(code=WS_NORMAL, message=b"stream complete")
        return ws
    abort_unacknowledged_after(request, settings.send_timeout_seconds)
    socket = DirectWebSocket(request, ws, metrics.events_sent_to("ws"))
    metrics.connections.labels("ws").inc()
    pump = asyncio.create_task(_pump_websocket(request, ws, follower, socket))
    app[appkeys.LIFECYCLE].websockets.add(ws)
    app[appkeys.WS_HEARTBEAT].add(socket)
    try:
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                command = json.loads(message.data)
            except (ValueError, RecursionError):  # not JSON, or nested absurdly deep
                continue
            if isinstance(command, dict) and command.get("type") == "cancel":
                await cancel()
    finally:
        app[appkeys.WS_HEARTBEAT].discard(socket)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        metrics.connections.labels("ws").dec()
    return ws


async def _pump_websocket(request: web.Request, ws: web.WebSocketResponse, follower: Follower,
                          socket: DirectWebSocket) -> None:
    app = request.app
    settings = app[appkeys.SETTINGS]
    metrics = app[appkeys.METRICS]
    sent = metrics.events_sent_to("ws")

    async def send(batch: list[Event]) -> None:
        for event in batch:  # the bytes encoded once per event, shared by its viewers
            await ws.send_frame(event.ws_bytes(), WSMsgType.TEXT)
        sent.inc(len(batch))

    code, reason = WS_NORMAL, b"stream complete"
    try:
        outbox = await relay(follower, settings, send, socket)
        metrics.frames_merged.inc(outbox.merged)
    except SlowConsumer:
        metrics.slow_consumers.inc()
        code, reason = WS_SLOW_CONSUMER, b"slow consumer, resume from your cursor"
    except ConnectionResetError:
        return  # the client left (before TRANSPORT_ERRORS: it is a ConnectionError)
    except TRANSPORT_ERRORS as exc:
        log.warning("redis failed mid-stream, client will resume: %s", exc,
                    extra={"stream_id": follower.stream_id})
        code, reason = WS_TRY_AGAIN, b"broker unavailable, resume"
    except RecordMissing:
        code, reason = WS_TRY_AGAIN, b"stream record missing, resume"
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(settings.send_timeout_seconds):
            await ws.close(code=code, message=reason)
