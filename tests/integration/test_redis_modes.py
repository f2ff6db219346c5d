"""The Redis modes beyond standalone: Sentinel (the master followed after the
old one is killed) and the ``tokenwire keys`` command on a cluster."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import make_settings
from tests.integration.test_store import started
from tests.support.live import Recorder
from tests.support.processes import ROOT
from tests.support.streams import new_job
from tests.support.valkey_cluster import ValkeyCluster
from tests.support.valkey_sentinel import ValkeySentinel
from tokenwire.edge.app import live_source_for
from tokenwire.edge.hub import Hub
from tokenwire.events import dumps
from tokenwire.redis_client import BlockingSentinelPool, create_redis
from tokenwire.store import PendingEvent, StreamStore
from tokenwire.worker.providers import SimulatedProvider
from tokenwire.worker.retrying import until_redis_answers
from tokenwire.worker.worker import Worker

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeySentinel]:
    valkey = ValkeySentinel(tmp_path_factory.mktemp("sentinel"))
    try:
        valkey.start()
        yield valkey
    finally:
        valkey.stop()


async def test_sentinel_mode_follows_the_master_through_a_failover(
    sentinel: ValkeySentinel
) -> None:
    settings = make_settings(sentinel.url, redis_mode="sentinel")
    redis = create_redis(settings)
    try:
        store = StreamStore(redis, settings)
        before = new_job("before the failover")
        await store.create(before, None, "fp")
        await asyncio.wait_for(Worker(redis, settings, SimulatedProvider(5000, 0),
                                      burst=True).run(), 20)
        new_master = await asyncio.to_thread(sentinel.kill_master)
        after = new_job("after the failover")
        loop = asyncio.get_running_loop()
        await until_redis_answers(lambda: store.create(after, None, "fp"), loop.time() + 20,
                                  "create", {})
        await asyncio.wait_for(Worker(redis, settings, SimulatedProvider(5000, 0),
                                      burst=True).run(), 20)
        for job in (before, after):
            meta = await store.meta(job.stream_id)
            assert meta is not None and meta.status == "done", job.messages
        assert int((await redis.info("server"))["tcp_port"]) == new_master
        # The hub's pub/sub connection goes to the master the sentinels name.
        hub = Hub(live_source_for(redis))
        hub.start()
        await hub.wait_connected()
        try:
            attempt = await started(store)
            recorder = Recorder()
            async with hub.subscribe(attempt.stream_id, recorder):
                await store.append(attempt, 2, [PendingEvent("token", dumps({"content": "x"}),
                                                             "x")])
                event = await recorder.next()
            assert event.seq == 2
        finally:
            await hub.close()
    finally:
        await redis.aclose()


async def test_sentinel_mode_leaves_a_demoted_master_for_the_new_one(
    sentinel: ValkeySentinel
) -> None:
    """A demoted master still answers reads (from a dataset it may be
    resyncing); redis-py's pool keeps its connections to it. Ours asks the
    sentinels every second and moves."""
    redis = create_redis(make_settings(sentinel.url, redis_mode="sentinel"))
    try:
        assert int((await redis.info("server"))["tcp_port"]) == sentinel.master_port
        new_master = await asyncio.to_thread(sentinel.switchover)
        await asyncio.sleep(BlockingSentinelPool.MASTER_CHECK_SECONDS)  # its period
        assert int((await redis.info("server"))["tcp_port"]) == new_master
    finally:
        await redis.aclose()


def keys_command(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "tokenwire", "keys", *args],
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT,
                            capture_output=True, text=True, timeout=30, check=True)
    return result.stdout


def test_the_keys_command_works_on_a_cluster(valkey_cluster: ValkeyCluster) -> None:
    env = {"TOKENWIRE_REDIS_MODE": "cluster", "TOKENWIRE_REDIS_URL": valkey_cluster.url}
    created = json.loads(keys_command(env, "create", "--tenant", "acme", "--max-running", "3",
                                      "--json"))
    listed = json.loads(keys_command(env, "list", "--json"))["keys"]
    assert created["key_id"] in [k["key_id"] for k in listed]
    assert keys_command(env, "revoke", created["key_id"]) == f"revoked {created['key_id']}\n"
    assert created["key_id"] not in keys_command(env, "list")
