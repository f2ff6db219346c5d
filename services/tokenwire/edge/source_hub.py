"""A hub over a ``live.LiveSource``: what the edge uses in cluster mode.

Interim: issue #13 part 1 moves the hub itself onto ``LiveSource`` (with a
standalone source), and this module then goes; until it lands, the edge keeps
``hub.Hub`` for standalone and Sentinel and uses this one, with the same public
surface, over ``ClusterLiveSource``. It keeps the hub's rules: who subscribes
to what is local state, changed without an ``await`` by ``subscribe`` and its
``finally``; one commander task brings the source in line, one call at a time;
a subscriber proceeds once its channel is confirmed; a malformed message is
logged and skipped; a gap signal marks the streams' subscribers lagged (they
re-read the stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection
from typing import TypeAlias

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from tokenwire import keys
from tokenwire.edge.cluster_live import ClusterLiveSource
from tokenwire.edge.hub import Hub
from tokenwire.edge.live import LiveSource
from tokenwire.edge.subscription import Subscription
from tokenwire.events import Event
from tokenwire.redis_client import TRANSPORT_ERRORS, RedisClient
from tokenwire.supervision import Background

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT = 10.0


class SourceHub:
    def __init__(self, source: LiveSource, queue_size: int) -> None:
        self._source = source
        self._queue_size = queue_size
        self._subscribers: dict[str, set[Subscription]] = {}
        self._dirty: set[str] = set()
        self._changed = asyncio.Event()
        self._active: set[str] = set()  # confirmed by the source (changed by the commander)
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._commander = Background("source-hub-commander", self._command)
        self.messages_received = 0
        self.malformed_messages = 0

    @property
    def channels(self) -> int:
        return len(self._subscribers)

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    @property
    def redis_channels(self) -> int:
        return len(self._active)

    @property
    def connected(self) -> bool:
        return self._source.connected

    def start(self) -> None:
        self._source.start(self)
        self._commander.start()

    async def wait_connected(self) -> None:
        await self._source.wait_connected()

    async def close(self) -> None:
        await self._commander.close()
        await self._source.close()

    @contextlib.asynccontextmanager
    async def subscribe(self, stream_id: str) -> AsyncIterator[Subscription]:
        if not self._source.connected:
            raise RedisConnectionError("the live source is not connected")
        subscription = Subscription(stream_id, self._queue_size)
        local = self._subscribers.get(stream_id)
        if local is None:
            local = self._subscribers[stream_id] = set()
            self._mark_dirty(stream_id)
        local.add(subscription)
        try:
            if stream_id not in self._active:
                future = self._confirmations.get(stream_id)
                if future is None:
                    future = asyncio.get_running_loop().create_future()
                    self._confirmations[stream_id] = future
                    self._mark_dirty(stream_id)
                async with asyncio.timeout(CONFIRM_TIMEOUT):
                    await asyncio.shield(future)
            yield subscription
        finally:
            local.discard(subscription)
            if not local and self._subscribers.get(stream_id) is local:
                del self._subscribers[stream_id]
                self._mark_dirty(stream_id)

    def _mark_dirty(self, stream_id: str) -> None:
        self._dirty.add(stream_id)
        self._changed.set()

    async def _command(self) -> None:
        while self._commander.running:
            await self._changed.wait()
            self._changed.clear()
            dirty, self._dirty = self._dirty, set()
            drop = [s for s in dirty if s not in self._subscribers]
            add = [s for s in dirty if s in self._subscribers and s not in self._active]
            if drop:
                self._active.difference_update(drop)
                for stream_id in drop:
                    self._settle(stream_id, RedisConnectionError("no subscriber left"))
                await self._source.unsubscribe([keys.live_channel(s) for s in drop])
            if not add:
                continue
            try:
                await self._source.subscribe([keys.live_channel(s) for s in add])
            except TRANSPORT_ERRORS as exc:  # still wanted: the source signals a gap later
                for stream_id in add:
                    self._settle(stream_id, exc)
                continue
            for stream_id in add:
                if stream_id in self._subscribers:
                    self._active.add(stream_id)
                self._settle(stream_id, None)

    def _settle(self, stream_id: str, error: BaseException | None) -> None:
        future = self._confirmations.pop(stream_id, None)
        if future is None or future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
            future.exception()  # its waiters may all be gone

    # --- LiveListener ------------------------------------------------------------------

    def on_live_message(self, channel: str, payload: str) -> None:
        self.messages_received += 1
        stream_id = _stream_of(channel)
        try:
            if stream_id is None:
                raise ValueError("not a stream channel")
            event = Event.from_live_message(payload)
        except ValueError as exc:
            self.malformed_messages += 1
            log.warning("malformed live message skipped on %s: %s (%.80r)", channel, exc,
                        payload, extra={"stream_id": stream_id})
            return
        for subscription in self._subscribers.get(stream_id, ()):
            try:
                subscription.deliver(event)
            except Exception:
                log.exception("live delivery failed; the subscriber re-reads Redis",
                              extra={"stream_id": stream_id})
                subscription.mark_lagged()

    def on_live_gap(self, channels: Collection[str] | None) -> None:
        streams = self._subscribers.keys() if channels is None else \
            [s for s in map(_stream_of, channels) if s is not None]
        for stream_id in list(streams):
            for subscription in self._subscribers.get(stream_id, ()):
                subscription.mark_lagged()


def _stream_of(channel: str) -> str | None:
    _, brace, rest = channel.partition("{")
    stream_id, closing, _ = rest.partition("}")
    return stream_id if brace and closing and stream_id else None


#: Either hub, as the edge holds it (until part 1's hub replaces both).
AnyHub: TypeAlias = "Hub | SourceHub"


def hub_for(redis: RedisClient, queue_size: int) -> AnyHub:
    """The edge's hub for ``redis``'s mode."""
    if isinstance(redis, RedisCluster):
        return SourceHub(ClusterLiveSource(redis), queue_size)
    return Hub(redis, queue_size)
