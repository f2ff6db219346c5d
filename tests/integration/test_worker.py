"""The worker against a real Valkey and a real Valkey Cluster: generation, ack,
reclaim, claim refresh, cancel, the partitioned queue and the legacy stream."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from redis.asyncio.cluster import RedisCluster

from tests.conftest import SettingsFactory, running_worker
from tests.support.jobs import pending_at_one_instant, pending_jobs, queued_jobs
from tests.support.streams import begin_attempt, new_job
from tests.support.valkey_cluster import ValkeyCluster
from tokenwire import keys
from tokenwire.events import dumps
from tokenwire.jobqueue import LEGACY, JobQueue, partition_for
from tokenwire.redis_client import RedisClient
from tokenwire.settings import Settings
from tokenwire.store import Attempt, PendingEvent, StreamStore
from tokenwire.worker.providers import SimulatedProvider
from tokenwire.worker.providers.simulated import simulated_tokens
from tokenwire.worker.retrying import until_redis_answers
from tokenwire.worker.worker import Worker

pytestmark = pytest.mark.both_backends


async def wait_for_status(store: StreamStore, stream_id: str, statuses: set[str],
                          seconds: float = 10) -> str:
    async with asyncio.timeout(seconds):
        while True:
            meta = await store.meta(stream_id)
            if meta is not None and meta.status in statuses:
                return meta.status
            await asyncio.sleep(0.02)


async def test_burst_worker_generates_every_job_exactly(
    redis: RedisClient, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    jobs = [new_job(f"prompt {i}") for i in range(5)]
    for job in jobs:
        await store.create(job, None, "fp")
    worker = Worker(redis, settings, SimulatedProvider(5000, 0), burst=True)
    await asyncio.wait_for(worker.run(), 5)
    assert worker.jobs_finished == 5
    for job in jobs:
        snap = await store.snapshot(job.stream_id)
        assert snap is not None and snap.meta.status == "done"
        expected = "".join(simulated_tokens(job.messages[0]["content"], 120))
        assert snap.text == expected
        assert snap.meta.final is not None
        assert snap.meta.final["sha256"] == hashlib.sha256(expected.encode()).hexdigest()
    # Acked and deleted: nothing pending, nothing left in the queue.
    assert await queued_jobs(redis, settings.job_partitions) == 0
    assert await pending_jobs(redis, settings.job_partitions) == []


async def test_the_default_buffer_writes_fewer_events_than_tokens(redis: RedisClient,
                                                                   settings: Settings) -> None:
    store = StreamStore(redis, settings)
    job = new_job("coalesce me")
    job = job.model_copy(update={"buffer": "coalesce"})
    await store.create(job, None, "fp")
    worker = Worker(redis, settings, SimulatedProvider(5000, 0), burst=True)
    await asyncio.wait_for(worker.run(), 20)
    meta = await store.meta(job.stream_id)
    assert meta is not None and meta.tokens == 121
    assert meta.last_seq - 2 < meta.tokens / 4  # minus start and done


async def test_a_job_whose_worker_died_is_reclaimed_as_a_new_attempt(
    redis: RedisClient, settings_factory: SettingsFactory
) -> None:
    settings = settings_factory(worker_claim_timeout_ms=300)
    store = StreamStore(redis, settings)
    job = new_job("orphan")
    await store.create(job, None, "fp")
    # A worker takes the job and dies after its first attempt began.
    dead = JobQueue(redis, "dead-worker", 300, settings.job_partitions)
    await dead.ensure_groups()
    [delivery] = await dead.read_new(partition_for(job.stream_id, settings.job_partitions), 1)
    first = await begin_attempt(store, job.stream_id, "dead-worker", delivery.entry_id)
    assert isinstance(first, Attempt)
    await store.append(first, 2, [PendingEvent("token", dumps({"content": "x"}), "x")])
    async with running_worker(redis, settings):
        assert await wait_for_status(store, job.stream_id, {"done"}) == "done"
    meta = await store.meta(job.stream_id)
    assert meta is not None and meta.attempt == 2 and meta.epoch != first.epoch
    events = await store.read_events(job.stream_id, 0, 1)
    assert events[0].type == "start" and events[0].epoch == meta.epoch
    assert await queued_jobs(redis, settings.job_partitions) == 0, delivery.entry_id


async def test_a_long_generation_is_not_stolen_while_alive(
    redis: RedisClient, settings_factory: SettingsFactory
) -> None:
    settings = settings_factory(worker_claim_timeout_ms=400,
                                simulated_tokens_per_second=100)  # ~1.2 s, 3 claim timeouts
    store = StreamStore(redis, settings)
    job = new_job("long one")
    await store.create(job, None, "fp")
    other = settings_factory(worker_claim_timeout_ms=400, consumer_name="other")
    async with running_worker(redis, settings, SimulatedProvider(100, 0)) as first, \
            running_worker(redis, other, SimulatedProvider(100, 0)) as second:
        await wait_for_status(store, job.stream_id, {"done"})
    meta = await store.meta(job.stream_id)
    # Either worker may take it first; neither may take it from the other.
    assert meta is not None and meta.attempt == 1, "the job was reclaimed while running"
    assert first.jobs_finished + second.jobs_finished == 1


async def test_cancel_reaches_the_running_worker_quickly(
    redis: RedisClient, settings_factory: SettingsFactory
) -> None:
    settings = settings_factory(simulated_tokens_per_second=20)  # ~6 s if not cancelled
    store = StreamStore(redis, settings)
    job = new_job("cancel me")
    await store.create(job, None, "fp")
    async with running_worker(redis, settings, SimulatedProvider(20, 0)):
        await wait_for_status(store, job.stream_id, {"running"})
        await asyncio.sleep(0.2)
        assert (await store.cancel(job.stream_id)).status == "cancelling"
        loop = asyncio.get_running_loop()
        asked = loop.time()
        await wait_for_status(store, job.stream_id, {"cancelled"}, seconds=3)
        assert loop.time() - asked < 1.0
    meta = await store.meta(job.stream_id)
    assert meta is not None and meta.final is not None
    assert meta.final["finish_reason"] == "cancelled"
    assert 0 < meta.final["tokens"] < 120
    assert await queued_jobs(redis, settings.job_partitions) == 0


async def test_worker_shutdown_leaves_unfinished_jobs_for_others(
    redis: RedisClient, settings_factory: SettingsFactory
) -> None:
    settings = settings_factory(worker_shutdown_grace_seconds=0.1,
                                simulated_tokens_per_second=20)
    store = StreamStore(redis, settings)
    job = new_job("interrupted")
    await store.create(job, None, "fp")
    async with running_worker(redis, settings, SimulatedProvider(20, 0)):
        await wait_for_status(store, job.stream_id, {"running"})
    pending = await pending_jobs(redis, settings.job_partitions)
    assert len(pending) == 1  # not acked: another worker will reclaim it


# --- the partitioned queue ---------------------------------------------------------------


async def test_jobs_spread_over_the_partitions_and_every_one_is_run(
    redis: RedisClient, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    jobs = [new_job(f"spread {i}") for i in range(24)]
    for job in jobs:
        await store.create(job, None, "fp")
    used = {partition_for(job.stream_id, settings.job_partitions) for job in jobs}
    assert len(used) > settings.job_partitions // 2  # 24 random ids over 16 partitions
    worker = Worker(redis, settings, SimulatedProvider(5000, 0), burst=True)
    await asyncio.wait_for(worker.run(), 20)
    assert worker.jobs_finished == 24
    assert await queued_jobs(redis, settings.job_partitions) == 0


async def test_a_worker_never_holds_more_jobs_than_its_concurrency(
    redis: RedisClient, settings_factory: SettingsFactory
) -> None:
    settings = settings_factory(worker_concurrency=2, simulated_tokens_per_second=400)
    store = StreamStore(redis, settings)
    jobs = [new_job(f"bounded {i}") for i in range(6)]  # ~0.3 s each, over 6 partitions
    for job in jobs:
        await store.create(job, None, "fp")
    held, last_read = 0, set[tuple[str, str]]()
    async with running_worker(redis, settings, SimulatedProvider(400, 0)) as worker:
        async with asyncio.timeout(20):
            while worker.jobs_finished < 6:
                at_once, last_read = await pending_at_one_instant(
                    redis, settings.job_partitions, last_read)
                held = max(held, len(at_once))
                await asyncio.sleep(0.01)
    assert held == 2


async def test_an_idle_worker_is_woken_by_a_new_job(
    redis: RedisClient, settings_factory: SettingsFactory
) -> None:
    """Workers never block on a read: a new job wakes them (``tw:jobs:wake``)
    long before their next look at every partition (8 s here)."""
    settings = settings_factory(read_block_ms=8000)
    store = StreamStore(redis, settings)
    async with running_worker(redis, settings) as worker:
        await asyncio.sleep(0.3)  # it has looked at every partition, found nothing
        job = new_job("wake up")
        await store.create(job, None, "fp")
        assert await wait_for_status(store, job.stream_id, {"done"}, seconds=4) == "done"
    assert worker.jobs_finished == 1  # counted after the write of `done`; stopping waits


async def test_jobs_queued_before_the_upgrade_on_tw_jobs_are_not_lost(
    redis: RedisClient, settings: Settings
) -> None:
    """Before the partitioned queue, every job went to one stream, ``tw:jobs``:
    one queued there, and one an old worker took and died with, are run."""
    store = StreamStore(redis, settings)
    queued, orphaned = new_job("queued before"), new_job("held by an old worker")
    await redis.xgroup_create(LEGACY.stream, "workers", id="0", mkstream=True)
    for job in (queued, orphaned):
        await redis.hset(keys.meta(job.stream_id), mapping=job.meta_fields())  # type: ignore[arg-type]
        await redis.xadd(LEGACY.stream, {"job": job.model_dump_json()})
    await redis.xreadgroup("workers", "old-worker", {LEGACY.stream: ">"}, count=1)
    quick = settings.model_copy(update={"worker_claim_timeout_ms": 300})
    async with running_worker(redis, quick):
        for job in (queued, orphaned):
            assert await wait_for_status(store, job.stream_id, {"done"}) == "done"
    assert await redis.xlen(LEGACY.stream) == 0


@pytest.mark.cluster_only
async def test_jobs_run_after_the_master_the_client_knew_first_dies(
    redis: RedisClient, settings: Settings, valkey_cluster: ValkeyCluster
) -> None:
    """redis-py asks its default node for the keys of ``XREADGROUP``: with that
    master dead, every read used to fail until the process restarted."""
    assert isinstance(redis, RedisCluster)
    await redis.ping()
    default = valkey_cluster.by_port(int(redis.get_default_node().port))
    store = StreamStore(redis, settings)
    await store.load_scripts()
    default.kill()
    try:
        await asyncio.to_thread(valkey_cluster.wait_ok)  # its replica took over
        jobs = [new_job(f"after the failover {i}") for i in range(6)]
        for job in jobs:
            await until_redis_answers(lambda job=job: store.create(job, None, "fp"),  # type: ignore[misc]
                                      asyncio.get_running_loop().time() + 10, "create", {})
        worker = Worker(redis, settings, SimulatedProvider(5000, 0), burst=True)
        await asyncio.wait_for(worker.run(), 20)
        assert worker.jobs_finished == 6
    finally:
        await asyncio.to_thread(valkey_cluster.restart, default)


async def test_a_worker_that_reclaims_its_own_running_job_does_not_run_it_twice(
    redis: RedisClient, settings_factory: SettingsFactory
) -> None:
    """While Redis is away a worker cannot refresh its claims; back, its own
    reclaim finds its running jobs idle. It used to start each a second time:
    the two attempts fenced each other until the job's attempts ran out."""
    settings = settings_factory(worker_claim_timeout_ms=600, simulated_tokens_per_second=60)
    store = StreamStore(redis, settings)
    job = new_job("mine already")  # ~2 s
    await store.create(job, None, "fp")
    partition = partition_for(job.stream_id, settings.job_partitions)
    async with running_worker(redis, settings, SimulatedProvider(60, 0)):
        await wait_for_status(store, job.stream_id, {"running"})
        [entry] = await pending_jobs(redis, settings.job_partitions)
        loop = asyncio.get_running_loop()
        stale_until = loop.time() + 1.2  # two reclaim periods: as if refreshes failed
        while loop.time() < stale_until:
            await redis.xclaim(partition.stream, "workers", "test-worker", 0,
                               [entry["message_id"]], idle=60_000, justid=True)
            await asyncio.sleep(0.02)
        assert await wait_for_status(store, job.stream_id, {"done", "error"}) == "done"
    meta = await store.meta(job.stream_id)
    assert meta is not None and meta.attempt == 1


async def test_a_worker_with_every_slot_busy_stops_when_asked(
    redis: RedisClient, settings_factory: SettingsFactory
) -> None:
    # Found by the OpenAPI fuzz test, whose worker ignored SIGTERM: with every
    # slot busy, the intake loop waited for a free slot and never saw stop().
    settings = settings_factory(worker_concurrency=1, worker_shutdown_grace_seconds=0.1)
    store = StreamStore(redis, settings)
    job = new_job("a minute of text")
    await store.create(job, None, "fp")
    worker = Worker(redis, settings, SimulatedProvider(2, 0))  # 121 tokens: a minute
    running = asyncio.create_task(worker.run())
    try:
        await wait_for_status(store, job.stream_id, {"running"})
        worker.stop()
        await asyncio.wait_for(asyncio.shield(running), 5)  # long before the text would end
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
