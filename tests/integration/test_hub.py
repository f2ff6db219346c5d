"""The hub against a real Valkey and a real Valkey Cluster, over the live
source the edge picks for each (``app.live_source_for``): one pub/sub
connection (on a cluster: one per master with subscribed channels), every
local subscriber fed, nothing leaked, faults signalled. The cluster's own
faults (failover, slot moves) are ``test_cluster_live``'s."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from tests.integration.test_store import started
from tests.support.live import Recorder, cancellation_storm
from tests.support.waiting import eventually
from tokenwire import keys
from tokenwire.edge.app import live_source_for
from tokenwire.edge.hub import Hub
from tokenwire.edge.redis_live import RedisLiveSource
from tokenwire.events import dumps
from tokenwire.redis_client import RedisClient, create_redis
from tokenwire.settings import Settings
from tokenwire.store import Attempt, PendingEvent, StreamStore


@pytest.fixture
async def hub(redis: RedisClient) -> AsyncIterator[Hub]:
    """The hub over the edge's live source for the backend (standalone: with a
    quick keep-alive, for the silent-connection test)."""
    source = RedisLiveSource(redis, keepalive=0.2) if isinstance(redis, Redis) \
        else live_source_for(redis)
    hub = Hub(source)
    hub.start()
    await hub.wait_connected()
    yield hub
    await hub.close()


async def append(store: StreamStore, attempt: Attempt, seq: int, text: str) -> None:
    await store.append(attempt, seq, [PendingEvent("token", dumps({"content": text}), text)])


async def pubsub_connections(redis: RedisClient) -> int:
    """Pub/sub connections the server(s) hold (every master of a cluster)."""
    if not isinstance(redis, RedisCluster):
        return len(await redis.client_list(_type="pubsub"))
    return sum([len(await redis.client_list(_type="pubsub", target_nodes=node))
                for node in redis.get_primaries()])


async def shard_channels(redis: RedisClient) -> int:
    """Sharded channels subscribed on the server(s) (every master of a cluster)."""
    if not isinstance(redis, RedisCluster):
        return len(await redis.pubsub_shardchannels())
    return sum([len(await redis.pubsub_shardchannels(target_nodes=node))
                for node in redis.get_primaries()])


@pytest.mark.both_backends
async def test_concurrent_first_subscribers_of_many_streams_all_receive(
    redis: RedisClient, settings: Settings
) -> None:
    """Concurrent first subscribes on a fresh client (connecting takes a
    while) are all confirmed and fed."""
    store = StreamStore(redis, settings)
    attempts = [await started(store) for _ in range(20)]
    fresh = create_redis(settings)  # no idle connections: connecting takes a while
    hub = Hub(live_source_for(fresh))
    hub.start()
    await hub.wait_connected()
    recorders = [Recorder() for _ in attempts for _ in range(3)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            await asyncio.gather(*(
                stack.enter_async_context(hub.subscribe(attempts[i // 3].stream_id, r))
                for i, r in enumerate(recorders)))
            for attempt in attempts:
                await append(store, attempt, 2, "x")
            received = await asyncio.gather(*(r.next() for r in recorders))
    finally:
        await hub.close()
        await fresh.aclose()
    assert all(event.seq == 2 for event in received)
    assert hub.channels == 0  # every subscriber left: every channel unsubscribed


@pytest.mark.both_backends
async def test_the_hub_holds_one_connection_whatever_the_subscribers(
    redis: RedisClient, settings: Settings, hub: Hub
) -> None:
    store = StreamStore(redis, settings)
    attempts = [await started(store) for _ in range(30)]
    async with contextlib.AsyncExitStack() as stack:
        await asyncio.gather(*(stack.enter_async_context(hub.subscribe(a.stream_id, Recorder()))
                               for a in attempts for _ in range(5)))
        masters = len(redis.get_primaries()) if isinstance(redis, RedisCluster) else 1
        assert await pubsub_connections(redis) == masters  # 30 streams: on every master
        assert hub.subscribers == 150 and hub.channels == 30
        assert await shard_channels(redis) == 30


@pytest.mark.both_backends
async def test_a_poisoned_live_message_does_not_stop_the_next_one(
    redis: RedisClient, settings: Settings, hub: Hub
) -> None:
    store = StreamStore(redis, settings)
    attempt = await started(store)
    recorder = Recorder()
    async with hub.subscribe(attempt.stream_id, recorder):
        channel = keys.live_channel(attempt.stream_id)
        for poison in ("no spaces at all", "e.notanumber token {}", ""):
            await redis.spublish(channel, poison)
        await append(store, attempt, 2, "x")
        event = await recorder.next()
    assert event.seq == 2
    assert hub.malformed_messages == 3 and recorder.gaps == 3


async def test_a_killed_pubsub_connection_is_a_gap_then_a_working_subscription(
    redis: Redis, settings: Settings, hub: Hub
) -> None:
    """The promise of the live source: what was published while the
    connection was down is followed by a gap signal once the channel is
    active again, and live events flow after it."""
    store = StreamStore(redis, settings)
    attempt = await started(store)
    recorder = Recorder()
    async with hub.subscribe(attempt.stream_id, recorder):
        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # type: ignore[no-untyped-call]
        await append(store, attempt, 2, "maybe lost")
        await recorder.gap()  # at the loss (or at the restore): re-read now
        async def resubscribed() -> bool:
            return hub.connected and len(await redis.pubsub_shardchannels()) == 1

        await eventually(resubscribed, 5, 0.02)
        await recorder.gap()  # the channel is active again
        recorder.events.clear()  # "maybe lost" may have arrived before the kill took effect
        await append(store, attempt, 3, "after")
        assert (await recorder.next()).seq == 3
    assert len(await redis.client_list(_type="pubsub")) == 1  # the new connection, not a leak


async def test_a_silent_pubsub_connection_is_found_by_its_keepalive(
    redis: Redis, settings: Settings, hub: Hub
) -> None:
    """A paused connection (no answer, no close) is dropped after a missed
    PING, like a peer that vanished; subscribers get a gap and are fed again."""
    store = StreamStore(redis, settings)
    attempt = await started(store)
    recorder = Recorder()
    async with hub.subscribe(attempt.stream_id, recorder):
        await redis.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # type: ignore[no-untyped-call]
        await recorder.gap(seconds=5)
        await recorder.gap(seconds=10)  # reconnected once the pause ended
        await append(store, attempt, 2, "after")
        assert (await recorder.next()).seq == 2


@pytest.mark.both_backends
async def test_subscribers_cancelled_at_any_point_leave_nothing_behind(
    redis: RedisClient, settings: Settings, hub: Hub
) -> None:
    store = StreamStore(redis, settings)
    await cancellation_storm(hub, [(await started(store)).stream_id for _ in range(8)])

    async def none_left() -> bool:  # the commander catches up with the hang-ups
        return not hub.redis_channels and not await shard_channels(redis)

    await eventually(none_left, 5, 0.02)
    assert hub.subscribers == 0 and hub.channels == 0
    # Still working: a new subscriber is confirmed and fed.
    attempt = await started(store)
    recorder = Recorder()
    async with hub.subscribe(attempt.stream_id, recorder):
        await append(store, attempt, 2, "y")
        assert (await recorder.next()).seq == 2


async def test_the_first_subscriber_after_a_quiet_spell_is_confirmed(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (found by the OpenAPI fuzz test on the hub before the seam):
    with no channel left, redis-py health-checks a connection before its next
    command — a PING whose reply it reads itself, while the listener is blocked
    reading the same connection — and the first subscriber after a quiet spell
    (30 s in production) waited 10 s for a 503. The live source sends without
    health checks; this holds it to that."""
    checking = Redis.from_url(settings.redis_url, decode_responses=True,
                              health_check_interval=0.05)  # a health check is due at once
    store = StreamStore(checking, settings)
    first, second = await started(store), await started(store)
    hub = Hub(RedisLiveSource(checking))
    hub.start()
    await hub.wait_connected()
    try:
        async with hub.subscribe(first.stream_id, Recorder()):
            pass  # the last subscriber leaves: no channel left

        async def nothing_subscribed() -> bool:
            return not await checking.pubsub_shardchannels()

        await eventually(nothing_subscribed, 5)
        await asyncio.sleep(0.1)  # longer than the health-check interval
        recorder = Recorder()
        async with asyncio.timeout(3), hub.subscribe(second.stream_id, recorder):
            await append(store, second, 2, "z")
            assert (await recorder.next()).seq == 2
        assert hub.connected
    finally:
        await hub.close()
        await checking.aclose()
    assert "live connection lost" not in caplog.text
