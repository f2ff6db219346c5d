"""The Redis broker on a Valkey Cluster: its reads follow a stream's slot to a new master."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.cluster import RedisCluster

from tests.integration.test_store import started
from tests.support.valkey_cluster import ValkeyCluster
from tokenwire import keys
from tokenwire.edge.app import live_source_for
from tokenwire.edge.broker import RedisBroker
from tokenwire.edge.hub import Hub
from tokenwire.events import dumps
from tokenwire.redis_client import RedisClient
from tokenwire.settings import Settings
from tokenwire.store import PendingEvent, StreamStore

pytestmark = pytest.mark.cluster_only


async def test_a_read_after_a_failover_answers_from_the_new_master(
    redis: RedisClient, settings: Settings, valkey_cluster: ValkeyCluster
) -> None:
    """A read is a transaction (meta and events at once), which redis-py does
    not redirect: the first one after the slot moved used to fail, and the
    client was held a second as for an outage. It answers at once."""
    assert isinstance(redis, RedisCluster)
    store = StreamStore(redis, settings)
    attempt = await started(store)
    await store.append(attempt, 2, [PendingEvent("token", dumps({"content": "x"}), "x")])
    broker = RedisBroker(store, Hub(live_source_for(redis)))  # reads only: no hub started
    before = await broker.read(attempt.stream_id, 0, 10)  # the client knows the old master
    master = valkey_cluster.node_of_slot(redis.keyslot(keys.meta(attempt.stream_id)))
    await asyncio.to_thread(valkey_cluster.failover, master)
    after = await broker.read(attempt.stream_id, 0, 10)
    assert [e.seq for e in after.events] == [e.seq for e in before.events] and after.events
    snapshot = await broker.snapshot(attempt.stream_id)
    assert snapshot is not None and snapshot.text.endswith("x")
