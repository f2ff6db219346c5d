"""One hub per edge process: local subscriptions over one live source, and fan-out.

The hub holds who, in this process, follows which stream; the live source
underneath (``live.LiveSource``: one pub/sub connection standalone, one per
node on a cluster) holds the connections to Redis. The hub asks the source for
a stream's channel when its first local subscriber arrives and gives it up
when the last leaves, parses each live message once, and hands the event to
every local subscriber synchronously, from the source's reader. It knows no
HTTP and no Redis.

What the hub fixed in issue #10 and keeps:

- no subscription outlives its subscriber: who subscribes to what is local
  state, changed without an ``await`` on entry and in the ``finally`` of the
  subscription, so a subscriber cancelled anywhere (waiting for the
  confirmation, reading, leaving) is always removed; one commander task brings
  the source in line (one call at a time), never cancelled by a subscriber;
- a malformed live message is logged and skipped — its subscribers get a gap
  signal and re-read the stream, which is the truth — never fatal; one
  subscriber's failure cannot starve the others;
- the commander runs supervised (a failure is logged and it restarts).

Gap signals from the source reach every subscriber of the channels they name.
The hub also sends one to the subscribers of a stream that has been quiet for
``idle_resync`` seconds (jittered, spread over time): a safety net behind the
source's promise, at the cost of one read per quiet stream and period.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Collection
from types import TracebackType
from typing import Protocol

from redis.exceptions import ConnectionError as RedisConnectionError

from tokenwire import keys
from tokenwire.edge.live import LiveSource
from tokenwire.events import Event
from tokenwire.redis_client import TRANSPORT_ERRORS
from tokenwire.supervision import start_supervised

log = logging.getLogger(__name__)

#: How long a new subscriber waits for its channel to be confirmed.
CONFIRM_TIMEOUT = 10.0
#: Idle checks per ``idle_resync`` period: quiet streams are re-read in slices.
IDLE_SLICES = 8


class LiveSubscriber(Protocol):
    """One reader of one stream's live events. Both methods are called
    synchronously from the hub's dispatch (the hot path: no blocking, no
    awaiting), and must not subscribe or unsubscribe anything themselves."""

    def on_event(self, event: Event) -> None:
        """An event appended to the stream (in order; duplicates are possible)."""

    def on_gap(self) -> None:
        """Events may have been missed: read the stream before trusting live ones."""


class Hub:
    """Local subscribers per live channel, over one live source (see the module docstring)."""

    def __init__(self, source: LiveSource, idle_resync: float = 30.0) -> None:
        self._source = source
        self._idle_resync = idle_resync
        self._subscribers: dict[str, set[LiveSubscriber]] = {}  # by channel
        # Channels whose subscription in the source may be out of line.
        self._dirty: set[str] = set()
        self._changed = asyncio.Event()
        # Changed only by the commander: channels asked of the source (and not
        # since given up), and those of them it confirmed.
        self._requested: set[str] = set()
        self._active: set[str] = set()
        # Subscribers waiting for a channel's confirmation.
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        # Channels that had a message since their last idle check, per slice.
        self._heard: list[set[str]] = [set() for _ in range(IDLE_SLICES)]
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.messages_received = 0
        self.malformed_messages = 0
        #: Subscribers told they may have missed events, per live-source gap
        #: signal or malformed message (not the idle resync's safety net).
        self.gap_signals = 0

    @property
    def channels(self) -> int:
        """Streams with at least one local subscriber."""
        return len(self._subscribers)

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    @property
    def redis_channels(self) -> int:
        """Channels this hub has asked the source for (and not since given up)."""
        return len(self._requested)

    @property
    def connected(self) -> bool:
        return self._source.connected

    def start(self) -> None:
        """Start the source (which connects in the background) and the
        commander; returns at once: an edge starts whether or not Redis is up."""
        self._source.start(self)
        self._tasks = [start_supervised("hub-commander", self._command),
                       start_supervised("hub-idle-resync", self._resync_quiet_streams)]

    async def wait_connected(self) -> None:
        await self._source.wait_connected()

    async def close(self) -> None:
        self._closing = True
        self._changed.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._source.close()

    def subscribe(self, stream_id: str, subscriber: LiveSubscriber) -> Subscription:
        """An async context manager: ``subscriber`` gets the stream's live
        events for the block (see ``broker.Broker.subscribe``)."""
        return Subscription(self, keys.live_channel(stream_id), subscriber)

    # --- local state (no await) ------------------------------------------------------

    def _add(self, channel: str, subscriber: LiveSubscriber) -> None:
        if not self._source.connected:
            raise RedisConnectionError("the hub's live connection is down")
        local = self._subscribers.get(channel)
        if local is None:
            local = self._subscribers[channel] = set()
            self._mark_dirty(channel)
        local.add(subscriber)

    def _remove(self, channel: str, subscriber: LiveSubscriber) -> None:
        local = self._subscribers.get(channel)
        if local is None:
            return
        local.discard(subscriber)
        if not local:
            del self._subscribers[channel]
            self._confirmations.pop(channel, None)  # its waiters were all local
            self._mark_dirty(channel)

    async def _confirmed(self, channel: str) -> None:
        if channel in self._active:
            return
        future = self._confirmations.get(channel)
        if future is None:
            future = self._confirmations[channel] = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(CONFIRM_TIMEOUT):
            # Shielded: one waiter's cancellation must not cancel the others' future.
            await asyncio.shield(future)

    def _mark_dirty(self, channel: str) -> None:
        self._dirty.add(channel)
        self._changed.set()

    # --- the commander: the source follows the local subscribers ----------------------

    async def _command(self) -> None:
        failing = False
        while not self._closing:
            await self._changed.wait()
            self._changed.clear()
            if self._closing:
                return
            dirty, self._dirty = self._dirty, set()
            drop = [c for c in dirty if c not in self._subscribers and c in self._requested]
            add = [c for c in dirty if c in self._subscribers and c not in self._active]
            if drop:
                self._requested.difference_update(drop)
                self._active.difference_update(drop)
                await self._source.unsubscribe(drop)
            if not add:
                continue
            self._requested.update(add)
            try:
                await self._source.subscribe(add)
            except TRANSPORT_ERRORS as exc:  # still wanted by the source: retry soon
                if not failing:  # once per outage, not every half second
                    log.warning("hub subscribe failed, will retry: %s", exc)
                failing = True
                self._dirty.update(add)
                self._changed.set()
                await asyncio.sleep(0.5)
                continue
            failing = False
            for channel in add:
                if channel in self._requested:  # not given up meanwhile
                    self._active.add(channel)
                    future = self._confirmations.pop(channel, None)
                    if future is not None and not future.done():
                        future.set_result(None)

    # --- the source's listener ----------------------------------------------------------

    def on_live_message(self, channel: str, payload: str) -> None:
        self.messages_received += 1
        subscribers = self._subscribers.get(channel)
        if not subscribers:
            return
        self._heard[hash(channel) % IDLE_SLICES].add(channel)
        try:
            event = Event.from_live_message(payload)
        except ValueError as exc:  # never fatal: the stream in Redis stays the truth
            self.malformed_messages += 1
            self.gap_signals += len(subscribers)
            log.warning("malformed live message skipped on %s: %s (%.80r)", channel, exc,
                        payload, extra={"stream_id": _stream_of(channel)})
            self._gap(channel, subscribers)
            return
        for subscriber in subscribers:
            try:
                subscriber.on_event(event)
            except Exception:  # one subscriber's failure must not starve the others
                log.exception("live delivery failed; the subscriber re-reads the stream",
                              extra={"stream_id": _stream_of(channel)})
                _signal_gap(subscriber)

    def on_live_gap(self, channels: Collection[str] | None) -> None:
        for channel in list(self._subscribers) if channels is None else channels:
            subscribers = self._subscribers.get(channel)
            if subscribers:
                self.gap_signals += len(subscribers)
                self._gap(channel, subscribers)

    def _gap(self, channel: str, subscribers: set[LiveSubscriber]) -> None:
        for subscriber in subscribers:
            _signal_gap(subscriber)

    # --- the idle resync -------------------------------------------------------------------

    async def _resync_quiet_streams(self) -> None:
        """Every ``idle_resync`` seconds (±25 %), each stream that had no live
        message meanwhile gets a gap signal: its subscribers re-read it. One
        slice of the streams per tick, so the reads are spread over time."""
        index = 0
        while not self._closing:
            await asyncio.sleep(self._idle_resync / IDLE_SLICES * random.uniform(0.75, 1.25))
            index = (index + 1) % IDLE_SLICES
            heard, self._heard[index] = self._heard[index], set()
            for channel, subscribers in list(self._subscribers.items()):
                if hash(channel) % IDLE_SLICES == index and channel not in heard:
                    self._gap(channel, subscribers)


class Subscription:
    """``Hub.subscribe``'s context manager: added on entry (then confirmed),
    removed on exit, each without an ``await`` before the change."""

    __slots__ = ("_channel", "_hub", "_subscriber")

    def __init__(self, hub: Hub, channel: str, subscriber: LiveSubscriber) -> None:
        self._hub, self._channel, self._subscriber = hub, channel, subscriber

    async def __aenter__(self) -> None:
        self._hub._add(self._channel, self._subscriber)
        try:
            await self._hub._confirmed(self._channel)
        except BaseException:
            self._hub._remove(self._channel, self._subscriber)
            raise

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self._hub._remove(self._channel, self._subscriber)


def _signal_gap(subscriber: LiveSubscriber) -> None:
    try:
        subscriber.on_gap()
    except Exception:  # a bug in one subscriber: log it, deliver to the others
        log.exception("a live subscriber failed on a gap signal")


def _stream_of(channel: str) -> str | None:
    """The stream id in a live channel's name (``tw:{<id>}:live``), for logs."""
    _, brace, rest = channel.partition("{")
    stream_id, closing, _ = rest.partition("}")
    return stream_id if brace and closing and stream_id else None
