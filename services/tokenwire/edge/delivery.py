"""The transports: SSE and WebSocket are thin adapters over one relay.

``relay`` runs the follower into a per-connection ``Outbox`` (merging token
frames for a client that falls behind) and writes the outbox to the socket
with a send timeout. Outcomes, and what the client sees:

- the terminal event was sent: SSE ends / WebSocket closes 1000;
- the client is a slow consumer: SSE ``error`` event ``slow_consumer``
  (retryable, no ``id``: the client's cursor stays at what it received) /
  WebSocket close 4408; it resumes from its cursor;
- Redis failed mid-stream: the client is held (pings continue) while the
  follower retries; after ``edge_redis_outage_seconds`` the response ends
  without a terminal event (WebSocket 1011) and the client resumes on any edge;
- the edge drains: SSE ends with a ``retry:`` spread over the drain window /
  WebSocket close 1012.
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
from aiohttp_sse import EventSourceResponse, sse_response

from tokenwire.edge import keys as appkeys
from tokenwire.edge.direct import DirectSse, DirectWebSocket, DirectWriter
from tokenwire.edge.errors import WS_NORMAL, WS_SLOW_CONSUMER, WS_TRY_AGAIN
from tokenwire.edge.follower import Follower
from tokenwire.edge.outbox import Outbox, SlowConsumer
from tokenwire.events import Event, dumps
from tokenwire.redis_client import TRANSPORT_ERRORS
from tokenwire.settings import Settings

log = logging.getLogger(__name__)

SLOW_CONSUMER_DATA = dumps({"code": "slow_consumer", "retryable": True,
                            "message": "the connection fell behind; resume from your cursor"})


def jittered_retry_ms(base_ms: int) -> int:
    """Spread reconnects: ``base`` ±50 %."""
    return int(base_ms * random.uniform(0.5, 1.5))


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
            except SlowConsumer as exc:
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
    task = asyncio.current_task()
    if task is not None:
        lifecycle.sse_tasks.add(task)
    metrics.connections.labels("sse").inc()
    sent = metrics.events_sent_to("sse")

    async def send(batch: list[Event]) -> None:
        await response.write(b"".join(event.sse_bytes() for event in batch))
        sent.inc(len(batch))

    try:
        async with sse_response(
            request, ping_interval=settings.sse_ping_seconds, headers=headers,
            send_timeout=settings.send_timeout_seconds,
            allow_all_methods=True,  # POST /v1/streams may answer with the stream itself
        ) as response:
            await _write_retry(response, jittered_retry_ms(settings.sse_retry_ms))
            try:
                outbox = await relay(follower, settings, send,
                                     DirectSse(request, response, sent))
                metrics.frames_merged.inc(outbox.merged)
            except SlowConsumer:
                log.info("slow consumer disconnected", extra={"stream_id": follower.stream_id})
                metrics.slow_consumers.inc()
                with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
                    await response.send(SLOW_CONSUMER_DATA, event="error")
            except ConnectionResetError:
                pass  # the client left (before TRANSPORT_ERRORS: it is a ConnectionError)
            except TRANSPORT_ERRORS as exc:
                log.warning("redis failed mid-stream, client will resume: %s", exc,
                            extra={"stream_id": follower.stream_id})
            except asyncio.CancelledError:
                if not lifecycle.draining or task is None:
                    raise
                # The drain cancelled us on purpose: absorb it so the response
                # ends properly (aiohttp-sse re-raises while a cancel is pending).
                task.uncancel()
                await _write_retry(response, drain_retry_ms(settings))
        return response
    finally:
        metrics.connections.labels("sse").dec()


async def _write_retry(response: EventSourceResponse, retry_ms: int) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write(f"retry: {retry_ms}\r\n\r\n".encode())


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
    ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat_seconds, compress=False)
    await ws.prepare(request)
    if follower is None:
        await ws.close(code=WS_NORMAL, message=b"stream complete")
        return ws
    metrics.connections.labels("ws").inc()
    pump = asyncio.create_task(_pump_websocket(request, ws, follower))
    app[appkeys.LIFECYCLE].websockets.add(ws)
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
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        metrics.connections.labels("ws").dec()
    return ws


async def _pump_websocket(request: web.Request, ws: web.WebSocketResponse, follower: Follower
                          ) -> None:
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
        outbox = await relay(follower, settings, send, DirectWebSocket(request, ws, sent))
        metrics.frames_merged.inc(outbox.merged)
    except SlowConsumer:
        metrics.slow_consumers.inc()
        code, reason = WS_SLOW_CONSUMER, b"slow consumer, resume from your cursor"
    except ConnectionResetError:
        return  # the client left (before TRANSPORT_ERRORS: it is a ConnectionError)
    except TRANSPORT_ERRORS as exc:
        log.warning("redis failed mid-stream, client will resume: %s", exc)
        code, reason = WS_TRY_AGAIN, b"broker unavailable, resume"
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(settings.send_timeout_seconds):
            await ws.close(code=code, message=reason)
