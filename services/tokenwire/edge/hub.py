"""One hub per edge process: reads each live stream from Redis once, fans it out.

The append script publishes every event on the stream's sharded channel
(``SPUBLISH``) in the same atomic step as its ``XADD``. The hub holds one
pub/sub connection, subscribes a channel when its first local subscriber
arrives and unsubscribes when the last leaves, and hands each message to every
local subscriber's bounded queue. The hub knows no HTTP.

A subscriber whose queue overflows is marked ``lagged`` and stops receiving
live events; its reader falls back to the stream in Redis, which is the source
of truth, so nothing is lost. After a pub/sub reconnect every subscriber is
marked lagged too, because messages published meanwhile are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from tokenwire import keys
from tokenwire.events import Event
from tokenwire.redis_client import TRANSPORT_ERRORS

log = logging.getLogger(__name__)


class Subscription:
    """A local subscriber's view of one stream's live events.

    ``direct``, while set, is offered each event before it is queued: the
    hot path, where a reader parked on ``get`` takes an in-order event
    synchronously (no task switch). It returns False for anything it does not
    take (out of order, no room), which is then queued as usual.

    The backlog and the waiter are made only when needed: an idle edge holds
    thousands of subscriptions, and an ``asyncio.Queue`` costs four deques
    (~3 KiB) each."""

    __slots__ = ("_backlog", "_maxsize", "_waiter", "direct", "lagged", "stream_id")

    def __init__(self, stream_id: str, maxsize: int) -> None:
        self.stream_id = stream_id
        # None in the backlog means "lagged: re-read Redis".
        self._backlog: deque[Event | None] | None = None
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self.lagged = False
        self.direct: Callable[[Event], bool] | None = None

    def deliver(self, event: Event) -> None:
        if self.lagged:
            return
        if self.direct is not None and not self._backlog and self.direct(event):
            return
        if self._backlog is not None and len(self._backlog) >= self._maxsize:
            self.mark_lagged()
            return
        self._push(event)

    def mark_lagged(self) -> None:
        """Drop what is queued; the reader will catch up from the stream."""
        self._backlog = None
        self.lagged = True
        self._push(None)

    def recover(self) -> None:
        """Called by the reader right before it re-reads Redis: live delivery resumes."""
        self._backlog = None
        self.lagged = False

    async def get(self, quiet_after: float) -> Event | None:
        """The next live event; None when lagged or quiet for ``quiet_after`` seconds."""
        if not self._backlog:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(quiet_after):
                    await self._waiter
            except TimeoutError:
                return None
            finally:
                self._waiter = None
        assert self._backlog  # only _push wakes the waiter
        return self._backlog.popleft()

    def _push(self, item: Event | None) -> None:
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Hub:
    def __init__(self, redis: Redis, queue_size: int) -> None:
        self._redis = redis
        self._queue_size = queue_size
        self._pubsub: PubSub = redis.pubsub()
        self._subscribers: dict[str, set[Subscription]] = {}
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()
        # redis-py's PubSub connects lazily and is not safe for concurrent first
        # commands (each may open a connection, orphaning the other's channels):
        # connect in start() and send (un)subscribe commands one at a time.
        self._commands = asyncio.Lock()
        self._has_channels = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        # Checked between messages; close() also cancels the blocking read.
        self._closing = False
        self.messages_received = 0

    @property
    def channels(self) -> int:
        return len(self._subscribers)

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def start(self) -> None:
        await self._pubsub.connect()  # type: ignore[no-untyped-call]
        self._listener = asyncio.create_task(self._listen(), name="hub-listener")

    async def close(self) -> None:
        self._closing = True
        self._has_channels.set()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    @contextlib.asynccontextmanager
    async def subscribe(self, stream_id: str) -> AsyncIterator[Subscription]:
        """Subscribe to a stream's live events; the subscription is active (Redis
        confirmed it) when this yields, so a read of the stream made afterwards
        cannot miss an event published in between."""
        subscription = Subscription(stream_id, self._queue_size)
        channel = keys.live_channel(stream_id)
        async with self._lock:
            local = self._subscribers.setdefault(stream_id, set())
            first = not local
            local.add(subscription)
            if first:
                confirmed = asyncio.get_running_loop().create_future()
                self._confirmations[channel] = confirmed
        try:
            if first:
                async with self._commands:
                    await self._pubsub.ssubscribe(channel)
                self._has_channels.set()
            await asyncio.wait_for(asyncio.shield(self._confirmations_for(channel)), 10.0)
            yield subscription
        finally:
            async with self._lock:
                local = self._subscribers.get(stream_id, set())
                local.discard(subscription)
                if not local:
                    self._subscribers.pop(stream_id, None)
                    self._confirmations.pop(channel, None)
                    with contextlib.suppress(*TRANSPORT_ERRORS):
                        async with self._commands:
                            await self._pubsub.sunsubscribe(channel)

    def _confirmations_for(self, channel: str) -> asyncio.Future[None]:
        future = self._confirmations.get(channel)
        if future is None:  # unsubscribed concurrently: nothing to wait for
            future = asyncio.get_running_loop().create_future()
            future.set_result(None)
        return future

    async def _listen(self) -> None:
        while not self._closing:
            await self._has_channels.wait()
            try:
                # Blocking read: no timer per message (the hot path); close() cancels it.
                message = await self._pubsub.get_message(timeout=None)
            except TRANSPORT_ERRORS as exc:
                log.warning("hub lost its pub/sub connection: %s", exc)
                self._lag_everyone()
                await asyncio.sleep(0.5)
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, object]) -> None:
        kind = message["type"]
        channel = str(message["channel"])
        if kind == "ssubscribe":
            future = self._confirmations.get(channel)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if kind != "smessage":
            return
        self.messages_received += 1
        stream_id = channel.split("{", 1)[1].split("}", 1)[0]
        event = Event.from_live_message(str(message["data"]))
        for subscription in self._subscribers.get(stream_id, ()):
            subscription.deliver(event)

    def _lag_everyone(self) -> None:
        for local in self._subscribers.values():
            for subscription in local:
                subscription.mark_lagged()
