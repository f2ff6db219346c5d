"""The worker against a real Valkey and a real Valkey Cluster: generation, ack,
reclaim, claim refresh, cancel, the partitioned queue and the legacy stream."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from tests.conftest import SettingsFactory, running_worker
from tests.support.jobs import pending_jobs, queued_jobs
from tests.support.streams import begin_attempt, new_job
from tokenwire.events import dumps
from tokenwire.jobqueue import JobQueue, partition_for
from tokenwire.redis_client import RedisClient
from tokenwire.settings import Settings
from tokenwire.store import Attempt, PendingEvent, StreamStore
from tokenwire.worker.providers import SimulatedProvider
from tokenwire.worker.providers.simulated import simulated_tokens
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
