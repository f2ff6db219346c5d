"""One hub per edge process: reads each live stream from Redis once, fans it out.

The append script publishes every event on the stream's sharded channel
(``SPUBLISH``) in the same atomic step as its ``XADD``. The hub holds one
pub/sub connection, subscribes a channel when its first local subscriber
arrives and unsubscribes when the last leaves, and hands each message to every
local subscriber's bounded queue. The hub knows no HTTP. A malformed live
message is logged and skipped: subscribers then see a gap and re-read Redis.

A subscriber whose queue overflows is marked ``lagged`` and stops receiving
live events; its reader falls back to the stream in Redis, which is the source
of truth, so nothing is lost. After a pub/sub reconnect every subscriber is
marked lagged too, because messages published meanwhile are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from tokenwire import keys
from tokenwire.edge.subscription import Subscription
from tokenwire.events import Event
from tokenwire.redis_client import TRANSPORT_ERRORS
from tokenwire.supervision import start_supervised

log = logging.getLogger(__name__)

#: How long a new subscriber waits for Redis to confirm its subscription.
CONFIRM_TIMEOUT = 10.0


class Hub:
    """Local subscribers per stream, and the Redis subscriptions that feed them.

    Who subscribes to what is local state, changed synchronously (no await) by
    ``subscribe`` and its ``finally``: a subscriber cancelled at any point —
    while waiting for Redis to confirm, while reading, while leaving — is
    always removed. One commander task brings Redis in line with that state
    (``SSUBSCRIBE``/``SUNSUBSCRIBE`` for the streams that changed), one command
    at a time, and is never cancelled by a subscriber; one listener task reads
    the pub/sub connection. Both run supervised: an unexpected error is logged
    and the task restarts.
    """

    def __init__(self, redis: Redis, queue_size: int) -> None:
        self._redis = redis
        self._queue_size = queue_size
        self._pubsub: PubSub = redis.pubsub()
        self._subscribers: dict[str, set[Subscription]] = {}
        # Streams whose Redis subscription may be out of line with _subscribers.
        self._dirty: set[str] = set()
        self._changed = asyncio.Event()
        # Changed only by the commander: streams SSUBSCRIBE'd (and not since
        # SUNSUBSCRIBE'd), and per stream the confirmations Redis still owes.
        self._subscribed: set[str] = set()
        self._unconfirmed: dict[str, int] = {}
        # Subscribers waiting for a stream's subscription to be confirmed.
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._connected = asyncio.Event()  # once connected, for good
        # False from a lost pub/sub connection until it reconnects: new
        # subscribers fail at once (a transient error) instead of waiting.
        self._healthy = False
        self._has_channels = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Loops check this as well as being cancelled: on Python 3.11 a cancel
        # that races with a timeout inside redis-py can be swallowed.
        self._closing = False
        self.messages_received = 0
        self.malformed_messages = 0

    @property
    def channels(self) -> int:
        """Streams with at least one local subscriber."""
        return len(self._subscribers)

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    @property
    def redis_channels(self) -> int:
        """Channels this hub has asked Redis for (and not since given up)."""
        return len(self._subscribed)

    @property
    def connected(self) -> bool:
        """Connected, and the pub/sub connection is up now."""
        return self._healthy

    def start(self) -> None:
        """Start the listener (which connects, retrying while Redis is down) and
        the commander. Returns at once: an edge starts whether or not Redis is up."""
        self._tasks = [start_supervised("hub-listener", self._listen),
                       start_supervised("hub-commander", self._command)]

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def close(self) -> None:
        self._closing = True
        self._changed.set()
        self._has_channels.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    @contextlib.asynccontextmanager
    async def subscribe(self, stream_id: str) -> AsyncIterator[Subscription]:
        """Subscribe to a stream's live events; the subscription is active (Redis
        confirmed it) when this yields, so a read of the stream made afterwards
        cannot miss an event published in between. Raises a transport error
        when Redis does not confirm in time."""
        if not self._healthy:
            raise RedisConnectionError("the hub's pub/sub connection is down")
        subscription = Subscription(stream_id, self._queue_size)
        local = self._subscribers.get(stream_id)
        if local is None:
            local = self._subscribers[stream_id] = set()
            self._mark_dirty(stream_id)
        local.add(subscription)
        try:
            await self._confirmed(stream_id)
            yield subscription
        finally:
            # No await before this point of the cleanup: it always runs whole.
            local.discard(subscription)
            if not local and self._subscribers.get(stream_id) is local:
                del self._subscribers[stream_id]
                self._confirmations.pop(stream_id, None)  # its waiters were all local
                self._mark_dirty(stream_id)

    async def _confirmed(self, stream_id: str) -> None:
        if stream_id in self._subscribed and stream_id not in self._unconfirmed:
            return  # already active in Redis
        future = self._confirmations.get(stream_id)
        if future is None:
            future = self._confirmations[stream_id] = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(CONFIRM_TIMEOUT):
            # Shielded: one waiter's cancellation must not cancel the others' future.
            await asyncio.shield(future)

    def _mark_dirty(self, stream_id: str) -> None:
        self._dirty.add(stream_id)
        self._changed.set()

    # --- the commander: Redis follows the local subscribers ----------------------

    async def _command(self) -> None:
        failing = False
        while not self._closing:
            await self._changed.wait()
            self._changed.clear()
            await self._connected.wait()
            if self._closing:
                return
            dirty, self._dirty = self._dirty, set()
            drop = [s for s in dirty if s not in self._subscribers and s in self._subscribed]
            add = [s for s in dirty if s in self._subscribers and s not in self._subscribed]
            try:
                await self._unsubscribe(drop)
                await self._subscribe(add)
                failing = False
            except TRANSPORT_ERRORS as exc:
                if not failing:  # once per outage, not every half second
                    log.warning("hub (un)subscribe failed, will retry: %s", exc)
                failing = True
                self._dirty |= dirty
                self._changed.set()
                await asyncio.sleep(0.5)

    async def _unsubscribe(self, drop: list[str]) -> None:
        if not drop:
            return
        self._subscribed.difference_update(drop)
        try:
            await self._pubsub.sunsubscribe(*map(keys.live_channel, drop))
        except BaseException:
            # redis-py still counts them, and resubscribes them on reconnect.
            self._subscribed.update(drop)
            raise

    async def _subscribe(self, add: list[str]) -> None:
        if not add:
            return
        # Recorded before sending: the listener may read a confirmation before
        # the send returns.
        self._subscribed.update(add)
        for stream_id in add:
            self._unconfirmed[stream_id] = self._unconfirmed.get(stream_id, 0) + 1
        self._has_channels.set()
        try:
            await self._pubsub.ssubscribe(*map(keys.live_channel, add))
        except BaseException:
            self._subscribed.difference_update(add)
            for stream_id in add:
                self._confirmed_once(stream_id)  # none will come for this send
            raise

    def _confirmed_once(self, stream_id: str) -> None:
        """One confirmation arrived (or will never come); wake the waiters when
        none is owed any more."""
        owed = self._unconfirmed.get(stream_id, 0) - 1
        if owed > 0:
            self._unconfirmed[stream_id] = owed
            return
        self._unconfirmed.pop(stream_id, None)
        if stream_id in self._subscribed:
            future = self._confirmations.pop(stream_id, None)
            if future is not None and not future.done():
                future.set_result(None)

    # --- the listener -------------------------------------------------------------

    async def _listen(self) -> None:
        await self._reconnect()
        while not self._closing:
            await self._has_channels.wait()
            try:
                # Blocking read: no timer per message (the hot path); close() cancels it.
                message = await self._pubsub.get_message(timeout=None)
            except TRANSPORT_ERRORS as exc:
                log.warning("hub lost its pub/sub connection: %s", exc)
                self._healthy = False
                self._lag_everyone()
                if self._pubsub.connection is not None:  # connect() anew, not "still up"
                    await self._pubsub.connection.disconnect()
                await self._reconnect()
                continue
            if message is not None and not self._closing:
                self._dispatch(message)

    async def _reconnect(self) -> None:
        """(Re)connect the pub/sub connection, retrying while Redis is down;
        redis-py resubscribes its channels on connect."""
        failures = 0
        while not self._closing:
            try:
                await self._pubsub.connect()  # type: ignore[no-untyped-call]
            except TRANSPORT_ERRORS as exc:
                if failures == 0:
                    log.warning("hub cannot reach Redis: %s", exc)
                failures += 1
                await asyncio.sleep(random.uniform(0.25, 0.75))
                continue
            if failures:
                log.info("hub reconnected")
            if self._pubsub.connection is not None:
                # No request/reply health checks on this connection: with no
                # channel subscribed, redis-py sends one (a PING it reads the
                # reply of) before the commander's next SSUBSCRIBE, while the
                # listener is blocked reading the same connection — a
                # RuntimeError that dropped the connection after each quiet
                # spell. A closed connection still ends the listener's read.
                self._pubsub.connection.health_check_interval = 0
            self._healthy = True
            self._connected.set()
            return

    def _dispatch(self, message: dict[str, object]) -> None:
        kind = message["type"]
        if kind == "ssubscribe":
            stream_id = _stream_of(str(message["channel"]))
            if stream_id is not None:
                self._confirmed_once(stream_id)
            return
        if kind != "smessage":
            return
        self.messages_received += 1
        channel, data = str(message["channel"]), str(message["data"])
        stream_id = _stream_of(channel)
        try:
            if stream_id is None:
                raise ValueError("not a stream channel")
            event = Event.from_live_message(data)
        except ValueError as exc:  # never fatal: the stream in Redis stays the truth
            self.malformed_messages += 1
            log.warning("malformed live message skipped on %s: %s (%.80r)", channel, exc, data,
                        extra={"stream_id": stream_id})
            return
        for subscription in self._subscribers.get(stream_id, ()):
            try:
                subscription.deliver(event)
            except Exception:  # one subscriber's failure must not starve the others
                log.exception("live delivery failed; the subscriber re-reads Redis",
                              extra={"stream_id": stream_id})
                subscription.mark_lagged()

    def _lag_everyone(self) -> None:
        """The connection dropped: live messages were lost meanwhile. On
        reconnect redis-py resubscribes every channel it holds, one
        confirmation each."""
        self._unconfirmed = {s: 1 for s in self._unconfirmed if s in self._subscribed}
        for local in self._subscribers.values():
            for subscription in local:
                subscription.mark_lagged()


def _stream_of(channel: str) -> str | None:
    """The stream id in a live channel's name (``tw:{<id>}:live``)."""
    _, brace, rest = channel.partition("{")
    stream_id, closing, _ = rest.partition("}")
    return stream_id if brace and closing and stream_id else None
