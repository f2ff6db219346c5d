"""The hub: one pub/sub connection, every local subscriber fed."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest
from redis.asyncio import Redis

from tests.integration.test_store import started
from tests.support.waiting import eventually
from tokenwire import keys
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
    redis: Redis, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    attempts = [await started(store) for _ in range(30)]
    hub = Hub(redis, queue_size=8)
    hub.start()
    await hub.wait_connected()
    try:
        async with contextlib.AsyncExitStack() as stack:
            await asyncio.gather(*(stack.enter_async_context(hub.subscribe(a.stream_id))
                                   for a in attempts for _ in range(5)))
            clients = await redis.client_list(_type="pubsub")
            assert len(clients) == 1
            assert hub.subscribers == 150 and hub.channels == 30
    finally:
        await hub.close()


async def test_a_poisoned_live_message_does_not_stop_the_next_one(
    redis: Redis, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    attempt = await started(store)
    hub = Hub(redis, queue_size=8)
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
    redis: Redis, settings: Settings
) -> None:
    """Each subscriber is cancelled at a random moment: while its subscription
    waits for Redis, while it holds it, or while it leaves."""
    stream_ids = [(await started(StreamStore(redis, settings))).stream_id for _ in range(8)]
    hub = Hub(redis, queue_size=8)
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


async def test_the_first_subscriber_after_a_quiet_spell_is_confirmed(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (found by the OpenAPI fuzz test): with no channel left,
    redis-py health-checks a pub/sub connection before its next command — a
    PING whose reply it reads itself, while the listener is blocked reading
    the same connection. The commander failed ("read() called while another
    coroutine is already waiting"), the connection was dropped, and the first
    subscriber after a quiet spell (30 s in production) waited 10 s for a 503."""
    checking = Redis.from_url(settings.redis_url, decode_responses=True,
                              health_check_interval=0.05)  # a health check is due at once
    store = StreamStore(checking, settings)
    first, second = await started(store), await started(store)
    hub = Hub(checking, queue_size=8)
    hub.start()
    await hub.wait_connected()
    try:
        async with hub.subscribe(first.stream_id):
            pass  # the last subscriber leaves: no channel left
        async def nothing_subscribed() -> bool:
            return not await checking.pubsub_shardchannels()

        await eventually(nothing_subscribed, 5)
        await asyncio.sleep(0.1)  # longer than the health-check interval
        async with asyncio.timeout(3), hub.subscribe(second.stream_id) as live:
            await store.append(second, 2, [PendingEvent("token", dumps({"content": "z"}), "z")])
            assert (event := await live.get(5)) is not None and event.seq == 2
    finally:
        await hub.close()
        await checking.aclose()
    assert "restarting" not in caplog.text and hub.connected
