"""One client connection following one stream: its position, outbox and writer.

A ``ClientStream`` is the hub's subscriber for its connection and runs in the
connection's own task (the request handler's, for SSE): no task of its own.
While the client is level with the stream, the hub's dispatch calls
``on_event``; the position machine says whether the event is the next one,
and the next one is written to the socket at once when nothing is waiting
ahead of it (``Transport.write_now``) — otherwise it is queued in the outbox
(merged with queued tokens) and the task is woken to write it. Everything
that needs an ``await`` happens in the task: reads the position asks for, and
writes bounded by the send timeout. A client whose outbox is over its budget
takes no more live events: it lags, and catches up from the stream once its
socket drains (nothing lost, memory bounded).

It ends for one reason (``Disconnect``), which its transport turns into the
right ending (an SSE ``reconnect`` notice, a WebSocket close code):

- ``DONE``: the terminal event was written;
- ``SLOW_CONSUMER``: one write took longer than ``send_timeout_seconds``, or
  the client stayed over its backlog for ``slow_consumer_seconds``;
- ``BROKER_UNAVAILABLE``: Redis stayed unreachable past
  ``edge_redis_outage_seconds`` (meanwhile the client is held, pinged);
- ``RECORD_MISSING``: the stream's record vanished (Redis lost it);
- ``HISTORY_EXPIRED``: the stream ended and its events expired before the
  client had them (its reconnect gets 204; the text is in the status);
- ``DRAINING``: the edge is shutting down (``close``);
- ``CLIENT_GONE``: the client left (a write failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from contextlib import AbstractAsyncContextManager

from tokenwire.edge.broker import Broker, LiveReader, catch_up
from tokenwire.edge.delivery_meter import DeliveryMeter, resume_outcome
from tokenwire.edge.outbox import Outbox
from tokenwire.edge.position import Live, Position
from tokenwire.edge.transports import Transport
from tokenwire.events import Event
from tokenwire.redis_client import TRANSPORT_ERRORS
from tokenwire.settings import Settings

log = logging.getLogger(__name__)


class Disconnect(enum.Enum):
    """Why a client's stream ended (see the module docstring); the value is the
    reason an SSE ``reconnect`` notice names."""

    DONE = "done"
    SLOW_CONSUMER = "slow_consumer"
    BROKER_UNAVAILABLE = "redis_unavailable"
    RECORD_MISSING = "record_missing"
    HISTORY_EXPIRED = "history_expired"
    DRAINING = "draining"
    CLIENT_GONE = "client_gone"


#: What a stream without a viewer report holds while it is followed.
_UNWATCHED = contextlib.nullcontext()


class _Ended(Exception):
    def __init__(self, reason: Disconnect) -> None:
        super().__init__(reason.value)
        self.reason = reason


class ClientStream(LiveReader):
    """One connection's delivery of one stream (see the module docstring)."""

    __slots__ = ("_behind_since", "_broker", "_busy", "_closing", "_deadline", "_meter",
                 "_outage_began", "_outbox", "_resuming", "_settings", "_transport", "_watch",
                 "stream_id")

    def __init__(self, broker: Broker, stream_id: str, position: Position,
                 transport: Transport, settings: Settings, *,
                 watch: AbstractAsyncContextManager[None] | None = None,
                 meter: DeliveryMeter | None = None) -> None:
        """``watch``: held while following (``viewers.ViewerReporter.watching``).
        ``meter``: told of overflows and of how a resume turned out (the
        transport reports its writes to it)."""
        super().__init__(position)
        self._meter = meter
        # A resume (the client sent a cursor) whose outcome is not known yet.
        self._resuming = meter is not None and position.cursor is not None
        self._broker = broker
        self.stream_id = stream_id
        self._transport = transport
        self._settings = settings
        self._watch = watch
        self._outbox = Outbox(settings.client_backlog_chars)
        self._busy = False  # a ``send`` is in progress: no direct write may overtake it
        self._deadline: asyncio.Timeout | None = None  # the send timeout of that ``send``
        self._closing: Disconnect | None = None
        self._outage_began: float | None = None
        # When it first had to drop a live event (its outbox over budget) since
        # the socket last took a write: it may stay so ``slow_consumer_seconds``.
        self._behind_since: float | None = None

    @property
    def frames_merged(self) -> int:
        return self._outbox.merged

    async def run(self) -> Disconnect:
        """Deliver until the stream ends for this client; returns why. Raises
        only ``CancelledError`` (the client left: aiohttp cancels its handler).

        While idle, this is the connection's only frame (the reads and writes
        are coroutines of their own only while they work): an idle
        connection's memory is mostly its frames."""
        try:
            while True:  # subscribe; while the live connection is down, hold and retry
                try:
                    async with (self._broker.subscribe(self.stream_id, self),
                                self._watch or _UNWATCHED):
                        while (ended := await self._work()) is None:
                            # Until woken: an event to write, a read to make, ``close``.
                            waiter = self._waiter = asyncio.get_running_loop().create_future()
                            try:
                                await waiter
                            finally:
                                self._waiter = None
                        return ended
                except TRANSPORT_ERRORS as exc:
                    await self._hold(exc)
        except _Ended as end:
            return end.reason
        finally:
            self._transport.open = False  # the response may end next: no write may follow

    def close(self, reason: Disconnect) -> None:
        """End as soon as possible with ``reason`` (the edge drains): a write in
        progress is cut short."""
        if self._closing is None:
            self._closing = reason
        self._wake()
        if self._deadline is not None:
            self._deadline.reschedule(asyncio.get_running_loop().time())

    # --- the hub's subscriber (synchronous, from its dispatch) ---------------------------

    def on_event(self, event: Event) -> None:
        outbox = self._outbox
        if outbox.full:  # behind: leave it to a read once the socket drains
            self._lag()
            return
        verdict = self._position.live(event)
        if verdict is Live.SEND:
            if not self._busy and not outbox and self._transport.write_now(event):
                return
            outbox.push(event)
            self._wake()
        elif verdict is Live.RESYNC:
            self._wake()

    def _lag(self) -> None:
        if self._position.gap():  # once until it caught up
            self._wake()
            if self._meter is not None:
                self._meter.lagged()
        if self._behind_since is None:
            self._behind_since = asyncio.get_running_loop().time()
            deadline = self._deadline  # a write is in progress: it now has less time
            when = deadline.when() if deadline is not None else None
            latest = self._behind_since + self._settings.slow_consumer_seconds
            if deadline is not None and when is not None and latest < when:
                deadline.reschedule(latest)

    # --- the connection's task -------------------------------------------------------------

    async def _work(self) -> Disconnect | None:
        """Make the reads the position needs and write what is queued, until
        there is nothing to do but wait (None) or the stream ended for this client."""
        position, outbox = self._position, self._outbox
        while self._closing is None:
            if (read := position.next_read()) is not None:
                try:
                    emitted = await catch_up(self._broker, self.stream_id, position, read)
                except TRANSPORT_ERRORS as exc:
                    await self._hold(exc)
                    continue
                for event in emitted:
                    outbox.push(event)
                if self._resuming:
                    self._judge_resume(emitted)
                self._outage_began = None
                if position.missing:
                    log.warning("stream record vanished mid-stream",
                                extra={"stream_id": self.stream_id})
                    return Disconnect.RECORD_MISSING
            if outbox:
                await self._flush()
            elif position.finished:
                return Disconnect.HISTORY_EXPIRED if position.expired else Disconnect.DONE
            elif position.level:
                return None
        return self._closing

    def _judge_resume(self, emitted: list[Event]) -> None:
        position = self._position
        if position.missing:  # the record vanished: no outcome to count
            self._resuming = False
            return
        outcome = resume_outcome(emitted, position.level or position.ended)
        if outcome is not None and self._meter is not None:
            self._meter.resumed(outcome)
            self._resuming = False

    async def _flush(self) -> None:
        """Write everything queued, including what is queued meanwhile."""
        outbox, settings = self._outbox, self._settings
        while outbox:
            batch = outbox.take()
            self._busy = True
            deadline_at = asyncio.get_running_loop().time() + settings.send_timeout_seconds
            if self._behind_since is not None:
                deadline_at = min(deadline_at,
                                  self._behind_since + settings.slow_consumer_seconds)
            try:
                async with asyncio.timeout_at(deadline_at) as deadline:
                    self._deadline = deadline
                    await self._transport.send(batch)
            except TimeoutError:  # the socket did not take it in time (or ``close`` cut it)
                raise _Ended(self._closing or Disconnect.SLOW_CONSUMER) from None
            except ConnectionError:  # the client left
                raise _Ended(Disconnect.CLIENT_GONE) from None
            finally:
                self._busy, self._deadline = False, None
            self._behind_since = None  # the socket took a write: it is moving

    async def _hold(self, error: BaseException) -> None:
        """Redis is unreachable: keep the client (pings go on) and retry, up to
        ``edge_redis_outage_seconds``; then end (``BROKER_UNAVAILABLE``)."""
        now = asyncio.get_running_loop().time()
        if self._outage_began is None:
            self._outage_began = now
            log.warning("redis unavailable mid-stream, holding the client: %s", error,
                        extra={"stream_id": self.stream_id})
        if now - self._outage_began >= self._settings.edge_redis_outage_seconds:
            raise _Ended(Disconnect.BROKER_UNAVAILABLE)
        await self._wait(random.uniform(0.5, 1.5))
        if self._closing is not None:
            raise _Ended(self._closing)
