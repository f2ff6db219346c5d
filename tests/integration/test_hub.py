"""The hub: one pub/sub connection (in a cluster: one per node with subscribed
streams), every local subscriber fed — on standalone Valkey and on a cluster."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest
from redis.asyncio.cluster import RedisCluster

from tests.integration.test_store import started
from tokenwire import keys
from tokenwire.edge.source_hub import hub_for
from tokenwire.events import dumps
from tokenwire.redis_client import RedisClient, create_redis
from tokenwire.settings import Settings
from tokenwire.store import PendingEvent, StreamStore

pytestmark = pytest.mark.both_backends


async def pubsub_connections(redis: RedisClient) -> int:
    """Pub/sub connections the server(s) hold (every master of a cluster)."""
    if not isinstance(redis, RedisCluster):
        return len(await redis.client_list(_type="pubsub"))
    return sum([len(await redis.client_list(_type="pubsub", target_nodes=node))
                for node in redis.get_primaries()])


async def test_concurrent_first_subscribers_of_many_streams_all_receive(
    redis: RedisClient, settings: Settings
) -> None:
    """Regression: redis-py's PubSub connects lazily, and concurrent first
    subscribes could each open a connection, orphaning subscriptions."""
    store = StreamStore(redis, settings)
    attempts = [await started(store) for _ in range(20)]
    fresh = create_redis(settings)  # no idle connections: connecting takes a while
    hub = hub_for(fresh, queue_size=64)
    hub.start()
    await hub.wait_connected()
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
    redis: RedisClient, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    attempts = [await started(store) for _ in range(30)]
    hub = hub_for(redis, queue_size=8)
    hub.start()
    await hub.wait_connected()
    try:
        async with contextlib.AsyncExitStack() as stack:
            await asyncio.gather(*(stack.enter_async_context(hub.subscribe(a.stream_id))
                                   for a in attempts for _ in range(5)))
            masters = len(redis.get_primaries()) if isinstance(redis, RedisCluster) else 1
            assert await pubsub_connections(redis) == masters  # 30 streams: on every master
            assert hub.subscribers == 150 and hub.channels == 30
    finally:
        await hub.close()


async def test_a_poisoned_live_message_does_not_stop_the_next_one(
    redis: RedisClient, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    attempt = await started(store)
    hub = hub_for(redis, queue_size=8)
    hub.start()
    await hub.wait_connected()
    try:
        async with hub.subscribe(attempt.stream_id) as live:
            channel = keys.live_channel(attempt.stream_id)
            for poison in ("no spaces at all", "e.notanumber token {}", ""):
                await redis.spublish(channel, poison)
            await store.append(attempt, 2, [PendingEvent("token", dumps({"content": "x"}), "x")])
            event = await live.get(5)
    finally:
        await hub.close()
    assert event is not None and event.seq == 2
    assert hub.malformed_messages == 3


async def test_subscribers_cancelled_at_any_point_leave_nothing_behind(
    redis: RedisClient, settings: Settings
) -> None:
    """Each subscriber is cancelled at a random moment: while its subscription
    waits for Redis, while it holds it, or while it leaves."""
    stream_ids = [(await started(StreamStore(redis, settings))).stream_id for _ in range(8)]
    hub = hub_for(redis, queue_size=8)
    hub.start()
    await hub.wait_connected()

    async def subscriber(stream_id: str) -> None:
        async with hub.subscribe(stream_id):
            await asyncio.sleep(random.uniform(0, 0.01))

    try:
        for _ in range(5):
            tasks = [asyncio.create_task(subscriber(random.choice(stream_ids)))
                     for _ in range(200)]
            await asyncio.sleep(random.uniform(0, 0.02))
            for task in tasks:
                if random.random() < 0.7:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        async with asyncio.timeout(5):  # the commander catches up with the hang-ups
            while True:
                if not hub.redis_channels and not await redis.pubsub_shardchannels():
                    break
                await asyncio.sleep(0.02)
        assert hub.subscribers == 0 and hub.channels == 0
        # Still working: a new subscriber is confirmed and fed.
        store = StreamStore(redis, settings)
        attempt = await started(store)
        async with hub.subscribe(attempt.stream_id) as live:
            await store.append(attempt, 2, [PendingEvent("token", dumps({"content": "y"}), "y")])
            assert (event := await live.get(5)) is not None and event.seq == 2
    finally:
        await hub.close()
