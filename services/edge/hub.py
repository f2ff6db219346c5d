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
    take (out of order, no room), which is then queued as usual."""

    def __init__(self, stream_id: str, maxsize: int) -> None:
        self.stream_id = stream_id
        # None in the queue means "lagged: re-read Redis".
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize + 1)
        self._maxsize = maxsize
        self.lagged = False
        self.direct: Callable[[Event], bool] | None = None

    def deliver(self, event: Event) -> None:
        if self.lagged:
            return
        if self.direct is not None and self._queue.empty() and self.direct(event):
            return
        if self._queue.qsize() >= self._maxsize:
            self.mark_lagged()
            return
        self._queue.put_nowait(event)

    def mark_lagged(self) -> None:
        """Drop what is queued; the reader will catch up from the stream."""
        self._drain()
        self.lagged = True
        self._queue.put_nowait(None)

    def recover(self) -> None:
        """Called by the reader right before it re-reads Redis: live delivery resumes."""
        self._drain()
        self.lagged = False

    async def get(self, quiet_after: float) -> Event | None:
        """The next live event; None when lagged or quiet for ``quiet_after`` seconds."""
        if not self._queue.empty():  # the busy path: no timer to arm and cancel
            return self._queue.get_nowait()
        try:
            async with asyncio.timeout(quiet_after):
                return await self._queue.get()
        except TimeoutError:
            return None

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()


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
