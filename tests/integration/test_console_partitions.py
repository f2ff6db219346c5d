"""The operator's console API and queue gauges over a partitioned job queue:
jobs queued and dead-lettered on several partitions (on a cluster, on several
masters) are all counted and listed, and a replay goes back to its own
partition, once."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_KEY, AUTH_VALUES, SettingsFactory
from tests.integration.auth_support import ClientFactory
from tests.integration.test_edge_api import error_of
from tests.support.streams import new_job
from tokenwire import keys
from tokenwire.edge.app import create_app
from tokenwire.jobqueue import JobQueue, partition_for
from tokenwire.jobs import Job
from tokenwire.redis_client import RedisClient
from tokenwire.store import StreamStore

pytestmark = pytest.mark.both_backends

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
#: Spread over the slot ranges: on a 3-master cluster, a different master each.
QUEUED_ON, DEAD_ON = (0, 6), (11, 15)


def job_on(partition: int, partitions: int) -> Job:
    while True:
        job = new_job()
        if keys.job_partition_of(job.stream_id, partitions) == partition:
            return job


async def gauges(client: TestClient) -> dict[str, float]:  # type: ignore[type-arg]
    text = await (await client.get("/metrics", headers=ADMIN)).text()  # or the metrics key
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name.startswith("tokenwire_")
            and not sample.labels}


async def test_the_console_sees_queued_and_dead_jobs_on_every_partition(
    redis: RedisClient, settings_factory: SettingsFactory, aiohttp_client: ClientFactory
) -> None:
    settings = settings_factory(**AUTH_VALUES)
    count = settings.job_partitions
    client = await aiohttp_client(create_app(settings, redis))
    store = StreamStore(redis, settings)
    queue = JobQueue(redis, "test-worker", 60_000, count)
    await queue.ensure_groups()
    for partition in QUEUED_ON:
        await store.create(job_on(partition, count), None, "")
    dead_jobs = [job_on(partition, count) for partition in DEAD_ON]
    for job in dead_jobs:  # what a worker does with a job that failed for good
        await store.create(job, None, "")
        [delivery] = await queue.read_new(partition_for(job.stream_id, count), 1)
        await store.dead_letter(job, delivery, "upstream_400")
        await queue.ack(delivery)

    figures = await gauges(client)
    assert (figures["tokenwire_queue_jobs"], figures["tokenwire_queue_waiting"],
            figures["tokenwire_dead_letters"]) == (2, 2, 2)
    listing = await client.get("/v1/admin/dead-letters", headers=ADMIN)
    assert listing.status == 200
    dead = {d["stream_id"]: d for d in (await listing.json())["dead_letters"]}
    assert set(dead) == {job.stream_id for job in dead_jobs}
    assert {d["id"].split(":")[0] for d in dead.values()} == {str(p) for p in DEAD_ON}

    first = dead[dead_jobs[0].stream_id]
    replays = [await client.post(f"/v1/admin/dead-letters/{first['id']}/replay",
                                 headers=ADMIN) for _ in range(2)]
    assert [r.status for r in replays] == [201, 200]
    replayed_as = {(await r.json())["stream_id"] for r in replays}
    assert len(replayed_as) == 1
    [again] = replayed_as
    assert keys.job_partition_of(again, count) == DEAD_ON[0]  # its own partition
    assert await redis.xlen(keys.job_stream(DEAD_ON[0], count)) == 1
    assert (await gauges(client))["tokenwire_queue_jobs"] == 3
    listed = (await (await client.get("/v1/admin/dead-letters", headers=ADMIN)).json())
    assert {d["stream_id"]: d["replayed_as"] for d in listed["dead_letters"]} == {
        dead_jobs[0].stream_id: again, dead_jobs[1].stream_id: None}
    # Another partition's number with the same entry id names no dead letter.
    entry_id = first["id"].split(":", 1)[1]
    for wrong in (f"{QUEUED_ON[0]}:{entry_id}", f"{count}:{entry_id}", f"x:{entry_id}"):
        response = await client.post(f"/v1/admin/dead-letters/{wrong}/replay", headers=ADMIN)
        assert await error_of(response) == (404, "not_found")
