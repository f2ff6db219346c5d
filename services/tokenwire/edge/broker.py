"""The Broker seam: how the edge reads a stream and hears its live events.

Delivery (``ClientStream`` for SSE and WebSocket, ``Follower`` for the
protocol adapters) knows only this protocol and ``position.Position``. Two
implementations:

- ``RedisBroker``: the stream store (meta, snapshot and pages, each one atomic
  read) and the hub over a ``live.LiveSource`` — the standalone/Sentinel one
  (``redis_live.RedisLiveSource``) or a cluster one;
- ``memory_broker.MemoryBroker``: the same semantics in process memory, gap
  signal included, for fast tests of delivery.

A subscription's promise, inherited from the live source: every event
appended while it is active reaches the subscriber's ``on_event``, in order,
or is followed by an ``on_gap`` — after which a read of the stream holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from redis.exceptions import MovedError

from tokenwire.edge.hub import Hub, LiveSubscriber
from tokenwire.edge.position import Position, Read
from tokenwire.events import Event
from tokenwire.store import Page, Snapshot, StreamMeta, StreamStore

__all__ = ["Broker", "LiveReader", "LiveSubscriber", "RedisBroker", "catch_up"]

log = logging.getLogger(__name__)


class Broker(Protocol):
    @property
    def connected(self) -> bool:
        """Whether live subscriptions can be made now (readiness)."""

    async def meta(self, stream_id: str) -> StreamMeta | None:
        """The stream's record, or None."""

    async def snapshot(self, stream_id: str) -> Snapshot | None:
        """Meta and the epoch's text, atomically; None without a record."""

    async def read(self, stream_id: str, after_seq: int, count: int) -> Page:
        """Meta and up to ``count`` events after ``after_seq``, atomically."""

    def subscribe(self, stream_id: str, subscriber: LiveSubscriber
                  ) -> AbstractAsyncContextManager[None]:
        """Feed ``subscriber`` the stream's live events for the block. On entry
        the subscription is active (confirmed by the server), so a read made in
        the block misses nothing published after it. Entering raises a
        transport error (``tokenwire.redis_client.TRANSPORT_ERRORS``) when the
        live connection is down or does not confirm in time. Leaving always
        unsubscribes, whatever is cancelled when."""


class RedisBroker:
    """Redis (standalone, Sentinel or Cluster): the store for reads, the hub for live events."""

    def __init__(self, store: StreamStore, hub: Hub) -> None:
        self._store = store
        self.hub = hub

    @property
    def connected(self) -> bool:
        return self.hub.connected

    async def meta(self, stream_id: str) -> StreamMeta | None:
        return await self._store.meta(stream_id)

    async def snapshot(self, stream_id: str) -> Snapshot | None:
        try:
            return await self._store.snapshot(stream_id)
        except MovedError:  # see ``read``
            return await self._store.snapshot(stream_id)

    async def read(self, stream_id: str, after_seq: int, count: int) -> Page:
        try:
            return await self._store.read_page(stream_id, after_seq, count)
        except MovedError:
            # Cluster: the slot moved (a migration, a failover). A transaction
            # does not follow MOVED — it ran nothing — but the client has
            # pointed the slot at its new master: once more, now, rather than
            # the client's hold of a second for an outage (this is not one).
            return await self._store.read_page(stream_id, after_seq, count)

    def subscribe(self, stream_id: str, subscriber: LiveSubscriber
                  ) -> AbstractAsyncContextManager[None]:
        return self.hub.subscribe(stream_id, subscriber)


async def catch_up(broker: Broker, stream_id: str, position: Position, read: Read
                   ) -> list[Event]:
    """Make the read ``position`` asked for and apply it: the events to emit.

    Raises ``CancelledError`` when the task was cancelled during the read even
    if the read returned: on Python 3.11, ``asyncio.wait_for`` (which redis-py
    awaits inside a command) returns the result of an operation that completes
    as the task is cancelled, and the cancellation is lost — a client that left
    during a read would be followed on forever."""
    if read.snapshot:
        result: Snapshot | Page | None = await broker.snapshot(stream_id)
    else:
        result = await broker.read(stream_id, read.after_seq, read.count)
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()
    if isinstance(result, Page):
        emitted = position.apply_page(result)
    else:
        emitted = position.apply_snapshot(result)
    for event in emitted:
        if event.type == "reset":
            log.info("reset %s", event.payload()["reason"], extra={"stream_id": stream_id})
    return emitted


class LiveReader:
    """What every live subscriber of the edge shares: a position machine fed
    from the hub's dispatch, and one task that waits for something to do (a
    read the position needs, an event to write). A gap signal wakes the task
    when it makes a read necessary."""

    __slots__ = ("_position", "_waiter")

    def __init__(self, position: Position) -> None:
        self._position = position
        self._waiter: asyncio.Future[None] | None = None

    def on_gap(self) -> None:
        if self._position.gap():
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, seconds: float | None = None) -> None:
        """Until woken, or ``seconds``."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            if seconds is None:
                await waiter
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(seconds):
                        await waiter
        finally:
            self._waiter = None
