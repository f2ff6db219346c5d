"""Per-key limits and the queue limit, under concurrent requests through real HTTP.

Every check-and-count is one script, so many requests fired at once (on one
edge or several) are admitted exactly up to the limit — never one more."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import auth_settings, make_settings, running_worker
from tests.integration.auth_support import (
    bearer,
    create,
    edge,
    edge_settings,
    eventually,
    new_key,
)
from tests.integration.edge_support import EdgeClient, read_events
from tests.integration.test_edge_api import error_of, reconnect_notice
from tests.support.jobs import queued_jobs
from tests.support.streams import begin_attempt, new_job
from tokenwire import keys
from tokenwire.edge.app import create_app
from tokenwire.limits import KeyLimiter
from tokenwire.settings import Settings
from tokenwire.store import Attempt, StreamStore
from tokenwire.worker.sink import RedisEventSink

__all__ = ["edge", "edge_settings"]  # fixtures, from auth_support

ClientFactory = Callable[..., Any]


async def create_many(client: EdgeClient, n: int, key: str | None = None
                      ) -> list[aiohttp.ClientResponse]:
    headers = bearer(key) if key else {}
    return list(await asyncio.gather(*(
        client.post("/v1/streams", json={"prompt": f"p{i}"}, headers=headers)
        for i in range(n))))


async def refusals(responses: list[aiohttp.ClientResponse]) -> Counter[tuple[int, str]]:
    counted: Counter[tuple[int, str]] = Counter()
    for response in responses:
        if response.status == 202:
            counted[(202, "")] += 1
        else:
            counted[await error_of(response)] += 1
            assert int(response.headers["Retry-After"]) >= 1
    return counted


async def test_the_model_allowlist(edge: EdgeClient, redis: Redis) -> None:
    key = (await new_key(edge, models=["simulated"]))["key"]
    response = await edge.post("/v1/streams", json={"prompt": "x", "model": "gpt-4o"},
                               headers=bearer(key))
    assert await error_of(response) == (422, "model_not_allowed")
    assert await queued_jobs(redis) == 0
    await create(edge, key, {"prompt": "x"})  # the default model (simulated) is allowed
    await create(edge, key, {"prompt": "x", "model": "simulated"})


@pytest.mark.both_backends
async def test_max_running_never_overshoots_and_slots_come_back(
    edge: EdgeClient, redis: Redis, edge_settings: Settings
) -> None:
    key = (await new_key(edge, max_running=3))["key"]
    responses = await create_many(edge, 25, key)
    assert await refusals(responses) == {(202, ""): 3, (429, "max_running_exceeded"): 22}
    assert await queued_jobs(redis) == 3
    admitted = [(await r.json())["id"] for r in responses if r.status == 202]
    # A queued stream cancelled by its tenant frees its slot at once.
    cancelled = await edge.post(f"/v1/streams/{admitted[0]}/cancel", headers=bearer(key))
    assert (await cancelled.json())["status"] == "cancelled"
    assert await refusals(await create_many(edge, 3, key)) == {
        (202, ""): 1, (429, "max_running_exceeded"): 2}
    # The worker frees each slot when its stream ends.
    async with running_worker(redis, edge_settings):
        for stream_id in admitted[1:]:
            await read_events(edge, stream_id, headers=bearer(key))
        async def all_released() -> bool:  # a slot goes with its job's acknowledgement
            return await redis.zcard(keys.key_running(created_key_id(key))) == 0

        await eventually(all_released)
        assert await refusals(await create_many(edge, 1, key)) == {(202, ""): 1}


def created_key_id(key: str) -> str:
    return key.split("_")[1]


@pytest.mark.both_backends
async def test_a_leaked_running_slot_heals_by_itself(edge: EdgeClient, redis: Redis) -> None:
    key = (await new_key(edge, max_running=2))["key"]
    running = keys.key_running(created_key_id(key))
    past = int(time.time() * 1000) - 1
    await redis.zadd(running, {"crashed-edge-1": past, "crashed-edge-2": past})
    assert await refusals(await create_many(edge, 3, key)) == {
        (202, ""): 2, (429, "max_running_exceeded"): 1}
    assert await redis.zscore(running, "crashed-edge-1") is None


@pytest.mark.both_backends
async def test_workers_refresh_the_slots_they_run(redis: Redis, settings: Settings) -> None:
    limiter = KeyLimiter(redis, settings)
    running = keys.key_running("k" * 16)
    soon = int(time.time() * 1000) + 1000
    await redis.zadd(running, {"s1": soon})
    await limiter.refresh_running([("k" * 16, "s1"), ("k" * 16, "ended")])
    assert (await redis.zscore(running, "s1") or 0) > soon + 60_000
    assert await redis.zscore(running, "ended") is None  # a released slot stays released


@pytest.mark.both_backends
async def test_requests_per_minute_never_overshoots(edge: EdgeClient) -> None:
    key = (await new_key(edge, requests_per_minute=5))["key"]
    responses = await create_many(edge, 20, key)
    assert await refusals(responses) == {(202, ""): 5, (429, "requests_per_minute_exceeded"): 15}
    refused = next(r for r in responses if r.status == 429)
    assert 50 <= int(refused.headers["Retry-After"]) <= 60


@pytest.mark.both_backends
async def test_tokens_per_minute_are_counted_by_the_worker(
    edge: EdgeClient, redis: Redis, edge_settings: Settings
) -> None:
    created = await new_key(edge, tokens_per_minute=100)
    key = created["key"]
    async with running_worker(redis, edge_settings):
        stream_id = (await create(edge, key, {"prompt": "count me"}))["id"]
        events = await read_events(edge, stream_id, headers=bearer(key))
    generated = events[-1].data["tokens"]
    assert generated > 100
    assert int(await redis.get(keys.key_tokens(created["key_id"])) or 0) == generated
    response = await edge.post("/v1/streams", json={"prompt": "x"}, headers=bearer(key))
    assert await error_of(response) == (429, "tokens_per_minute_exceeded")
    assert 1 <= int(response.headers["Retry-After"]) <= 60


async def test_counting_tokens_shares_the_appends_round_trip(redis: Redis, settings: Settings
                                                             ) -> None:
    store = StreamStore(redis, settings)
    await store.load_scripts()
    limiter = KeyLimiter(redis, settings, store.batcher)
    job_stream = (await store_job(store))
    attempt = await begin_attempt(store, job_stream, "w1")
    assert isinstance(attempt, Attempt)
    sink = RedisEventSink(store, attempt, 1.0, partial(limiter.spend, "k" * 16))
    before = store.batcher.round_trips
    await sink.token("hello ", 2)
    await sink.token("world", 1)
    assert store.batcher.round_trips == before + 2  # one per append, the count included
    assert await redis.get(keys.key_tokens("k" * 16)) == "3"


async def store_job(store: StreamStore) -> str:
    job = new_job()
    await store.create(job, None, "fingerprint")
    return job.stream_id


@pytest.mark.both_backends
async def test_open_connections_never_overshoot_across_edges(
    redis: Redis, edge_settings: Settings, aiohttp_client: ClientFactory
) -> None:
    edge1 = await aiohttp_client(create_app(edge_settings))
    edge2 = await aiohttp_client(create_app(edge_settings))
    key = (await new_key(edge1, max_connections=3))["key"]
    stream_id = (await create(edge1, key))["id"]  # queued: connections stay open
    path = f"/v1/streams/{stream_id}/events"
    opened = await asyncio.gather(*(
        client.get(path, headers=bearer(key)) for client in [edge1, edge2] * 6))
    # An event stream is never refused with a status EventSource gives up on:
    # the refused ones get 200 and only a reconnect notice, and end at once;
    # the admitted ones stay open (the stream is queued).
    assert {r.status for r in opened} == {200}
    bodies = {asyncio.ensure_future(r.text()): r for r in opened}
    ended: set[asyncio.Future[str]] = set()
    while len(ended) < 9:
        done, _ = await asyncio.wait(set(bodies) - ended, timeout=10,
                                     return_when=asyncio.FIRST_COMPLETED)
        assert done, f"only {len(ended)} refused"
        ended |= done
    reasons = Counter(reconnect_notice(body.result())[1]["reason"] for body in ended)
    assert reasons == {"max_connections_exceeded": 9}
    assert await redis.zcard(keys.key_connections(created_key_id(key))) == 3  # still open
    with pytest.raises(aiohttp.WSServerHandshakeError) as no_room:
        await edge2.ws_connect(f"/v1/streams/{stream_id}/ws", headers=bearer(key))
    assert no_room.value.status == 429
    for body in set(bodies) - ended:
        body.cancel()
    for response in opened:
        response.close()
    conns = keys.key_connections(created_key_id(key))

    async def all_released() -> bool:  # each edge releases its slots as the handlers end
        return await redis.zcard(conns) == 0

    await eventually(all_released)
    async with edge2.ws_connect(f"/v1/streams/{stream_id}/ws", headers=bearer(key)):
        assert await redis.zcard(conns) == 1


async def test_a_full_queue_never_overshoots(
    redis: Redis, redis_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url, max_queue_length=5,
                                                             job_partitions=1)))
    responses = await create_many(client, 30)
    assert await refusals(responses) == {(202, ""): 5, (429, "queue_full"): 25}
    assert await queued_jobs(redis) == 5
    assert len([k async for k in redis.scan_iter("tw:{*}:meta")]) == 5  # refused: no record


async def test_a_refused_enqueue_takes_its_admission_back(
    redis: Redis, redis_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(auth_settings(redis_url, max_queue_length=1,
                                                           job_partitions=1)))
    created = await new_key(client, max_running=5, requests_per_minute=5)
    await create(client, created["key"])
    assert await refusals(await create_many(client, 3, created["key"])) == {
        (429, "queue_full"): 3}
    assert await redis.zcard(keys.key_running(created["key_id"])) == 1
    assert await redis.zcard(keys.key_requests(created["key_id"])) == 1


async def test_connections_of_an_edge_that_died_expire(edge: EdgeClient, redis: Redis) -> None:
    created = await new_key(edge, max_connections=1)
    stream_id = (await create(edge, created["key"]))["id"]
    past = int(time.time() * 1000) - 1
    await redis.zadd(keys.key_connections(created["key_id"]), {"dead-edge-conn": past})
    response = await edge.get(f"/v1/streams/{stream_id}/events", headers=bearer(created["key"]))
    assert response.status == 200  # the dead edge's lease no longer counts
    conns = keys.key_connections(created["key_id"])
    assert await redis.zcard(conns) == 1
    response.close()

    async def released() -> bool:
        return await redis.zcard(conns) == 0

    await eventually(released)
