"""The cluster live source on a real Valkey Cluster: one connection per node with
subscribed channels, routed by slot; a slot migration, a manual failover and a
master killed with kill -9 each cost the affected channels a gap signal and a
resubscription on the new owner — and leave the channels of other shards alone."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Collection

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support.valkey_cluster import SLOT_RANGES, ValkeyCluster
from tokenwire import keys
from tokenwire.edge.cluster_live import ClusterLiveSource
from tokenwire.redis_client import TRANSPORT_ERRORS, RedisClient

pytestmark = [pytest.mark.cluster_only, pytest.mark.timeout(90)]


class Recorder:
    """A ``LiveListener`` that keeps what it hears."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self.gaps: list[str | None] = []
        self.heard = asyncio.Event()

    def on_live_message(self, channel: str, payload: str) -> None:
        self.messages.append((channel, payload))
        self.heard.set()

    def on_live_gap(self, channels: Collection[str] | None) -> None:
        self.gaps += list(channels) if channels is not None else [None]
        self.heard.set()

    async def until(self, seconds: float, check: object) -> None:
        async with asyncio.timeout(seconds):
            while not check():  # type: ignore[operator]
                self.heard.clear()
                await self.heard.wait()


def channel_in_range(first: int, last: int, skip: int = 0) -> str:
    """A live channel whose slot lies in ``first..last`` (the ``skip``-th found)."""
    for _ in range(10_000):
        channel = keys.live_channel(keys.new_stream_id())
        if first <= key_slot(channel.encode()) <= last:
            if skip == 0:
                return channel
            skip -= 1
    raise AssertionError("no such channel")


@pytest.fixture
async def source(redis: RedisClient) -> AsyncIterator[tuple[ClusterLiveSource, Recorder]]:
    assert isinstance(redis, RedisCluster)
    live = ClusterLiveSource(redis)
    recorder = Recorder()
    live.start(recorder)
    async with asyncio.timeout(10):
        await live.wait_connected()
    yield live, recorder
    await live.close()


async def publish_until_heard(redis: RedisClient, recorder: Recorder, channel: str,
                              seconds: float = 10.0) -> float:
    """SPUBLISH to ``channel`` every 20 ms until the source delivers one of
    these messages; the seconds that took."""
    started = time.monotonic()
    probe = f"probe-{keys.new_epoch()}"
    async with asyncio.timeout(seconds):
        while not any(c == channel and p == probe for c, p in recorder.messages):
            with contextlib.suppress(*TRANSPORT_ERRORS):  # the shard may be failing over
                await redis.spublish(channel, probe)
            await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_one_connection_per_node_with_channels_and_every_message_delivered(
    source: tuple[ClusterLiveSource, Recorder], redis: RedisClient
) -> None:
    live, recorder = source
    channels = [channel_in_range(first, last) for first, last in SLOT_RANGES[:2]]
    await live.subscribe(channels)
    assert live.connections == 2  # the third master holds nothing of ours
    for index, channel in enumerate(channels):
        await redis.spublish(channel, f"m{index}")
    await recorder.until(5, lambda: len(recorder.messages) == 2)
    assert sorted(recorder.messages) == sorted(
        (channel, f"m{index}") for index, channel in enumerate(channels))
    assert recorder.gaps == []
    await live.unsubscribe([channels[0]])
    await redis.spublish(channels[0], "after")
    await redis.spublish(channels[1], "still")
    await recorder.until(5, lambda: (channels[1], "still") in recorder.messages)
    assert (channels[0], "after") not in recorder.messages
    assert live.connections == 1  # a node left without channels is let go


async def test_a_migrated_slot_costs_its_channels_a_gap_and_nothing_else(
    source: tuple[ClusterLiveSource, Recorder], redis: RedisClient,
    valkey_cluster: ValkeyCluster
) -> None:
    live, recorder = source
    moving = channel_in_range(*SLOT_RANGES[0])
    staying = channel_in_range(*SLOT_RANGES[1])
    await live.subscribe([moving, staying])
    slot = key_slot(moving.encode())
    source_node = valkey_cluster.node_of_slot(slot)
    target = valkey_cluster.node_of_slot(SLOT_RANGES[2][0])
    try:
        await asyncio.to_thread(valkey_cluster.migrate_slot, slot, target)
        # The old owner pushes sunsubscribe: a gap now, and one once resubscribed.
        await recorder.until(10, lambda: recorder.gaps.count(moving) >= 2)
        await publish_until_heard(redis, recorder, moving)
        assert staying not in recorder.gaps
        await redis.spublish(staying, "untouched")
        await recorder.until(5, lambda: (staying, "untouched") in recorder.messages)
    finally:
        await asyncio.to_thread(valkey_cluster.migrate_slot, slot, source_node)


async def test_a_manual_failover_moves_its_channels_to_the_new_master(
    source: tuple[ClusterLiveSource, Recorder], redis: RedisClient,
    valkey_cluster: ValkeyCluster
) -> None:
    live, recorder = source
    moving = channel_in_range(*SLOT_RANGES[1])
    staying = channel_in_range(*SLOT_RANGES[2])
    await live.subscribe([moving, staying])
    old = valkey_cluster.node_of_slot(key_slot(moving.encode()))
    new = await asyncio.to_thread(valkey_cluster.failover, old)
    await recorder.until(10, lambda: recorder.gaps.count(moving) >= 2)
    await publish_until_heard(redis, recorder, moving)
    assert valkey_cluster.node_of_slot(key_slot(moving.encode())) is new
    assert staying not in recorder.gaps


async def test_a_killed_master_costs_its_channels_about_two_seconds(
    source: tuple[ClusterLiveSource, Recorder], redis: RedisClient,
    valkey_cluster: ValkeyCluster
) -> None:
    live, recorder = source
    doomed = [channel_in_range(*SLOT_RANGES[0], skip=i) for i in range(3)]
    staying = [channel_in_range(*SLOT_RANGES[1]), channel_in_range(*SLOT_RANGES[2])]
    await live.subscribe([*doomed, *staying])
    master = valkey_cluster.node_of_slot(key_slot(doomed[0].encode()))
    master.kill()
    late = channel_in_range(*SLOT_RANGES[0], skip=3)
    try:
        await recorder.until(5, lambda: all(c in recorder.gaps for c in doomed))
        # A new subscriber of the dead shard fails at once (a transient error)
        # rather than hold the hub; the channel is placed later, with a gap.
        with pytest.raises(RedisConnectionError):  # not the 1 s timeout's TimeoutError
            async with asyncio.timeout(1):
                await live.subscribe([late])
        await recorder.until(15, lambda: late in recorder.gaps)
        for channel in doomed:  # back on the new master, a second gap each
            await recorder.until(15, lambda c=channel: recorder.gaps.count(c) >= 2)
            await publish_until_heard(redis, recorder, channel)
        assert not set(staying) & set(recorder.gaps)
        for channel in staying:
            await redis.spublish(channel, "untouched")
        await recorder.until(5, lambda: all((c, "untouched") in recorder.messages
                                            for c in staying))
    finally:
        await asyncio.to_thread(valkey_cluster.restart, master)
