"""The hub: one pub/sub connection, every local subscriber fed."""

from __future__ import annotations

import asyncio
import contextlib

from redis.asyncio import Redis

from tests.integration.test_store import started
from tokenwire.edge.hub import Hub
from tokenwire.events import dumps
from tokenwire.redis_client import create_redis
from tokenwire.settings import Settings
from tokenwire.store import PendingEvent, StreamStore


async def test_concurrent_first_subscribers_of_many_streams_all_receive(
    redis: Redis, settings: Settings
) -> None:
    """Regression: redis-py's PubSub connects lazily, and concurrent first
    subscribes could each open a connection, orphaning subscriptions."""
    store = StreamStore(redis, settings)
    attempts = [await started(store) for _ in range(20)]
    fresh = create_redis(settings)  # no idle connections: connecting takes a while
    hub = Hub(fresh, queue_size=64)
    await hub.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            subscriptions = await asyncio.gather(*(
                stack.enter_async_context(hub.subscribe(a.stream_id))
                for a in attempts for _ in range(3)))
            for attempt in attempts:
                await store.append(attempt, 2, [PendingEvent("token", dumps({"content": "x"}),
                                                             "x")])
            received = await asyncio.gather(*(s.get(5) for s in subscriptions))
    finally:
        await hub.close()
        await fresh.aclose()
    assert all(event is not None and event.seq == 2 for event in received)
    assert hub.channels == 0  # every subscriber left: every channel unsubscribed


async def test_the_hub_holds_one_connection_whatever_the_subscribers(
    redis: Redis, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    attempts = [await started(store) for _ in range(30)]
    hub = Hub(redis, queue_size=8)
    await hub.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            await asyncio.gather(*(stack.enter_async_context(hub.subscribe(a.stream_id))
                                   for a in attempts for _ in range(5)))
            clients = await redis.client_list(_type="pubsub")
            assert len(clients) == 1
            assert hub.subscribers == 150 and hub.channels == 30
    finally:
        await hub.close()
