"""A scripted run — normal, cancelled, restarted (its clients get a reset),
failed and dead-lettered, resumed at the end and after expiry, refused
credentials — and each counter and histogram moved by what happened, read back
from ``/metrics`` (the edge's, and the worker's own listener) with
Prometheus' text parser. The real worker and the openai SDK against the local
OpenAI-compatible server, the real edge, a real Valkey."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from tests.conftest import auth_settings, make_settings
from tests.integration.auth_support import ADMIN, ClientFactory, bearer, new_key
from tests.integration.edge_support import EdgeClient
from tests.support import fake_openai
from tests.support.streams import new_job
from tests.support.waiting import eventually
from tokenwire import keys
from tokenwire.client import ClientEvent, parse_sse
from tokenwire.edge.app import create_app
from tokenwire.events import dumps
from tokenwire.settings import Settings
from tokenwire.store import Attempt, PendingEvent, StreamStore
from tokenwire.worker.probes import probe_app, serving
from tokenwire.worker.providers import OpenAIProvider
from tokenwire.worker.worker import Worker

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
async def llm() -> AsyncIterator[str]:
    async with TestServer(fake_openai.create_app()) as server:
        yield str(server.make_url("/v1"))


@pytest.fixture
def settings_(redis_url: str, llm: str) -> Settings:
    return auth_settings(redis_url, provider="openai", openai_api_key="sk-test",
                         openai_base_url=llm, upstream_retries=0, max_attempts=2,
                         default_buffer="none", models=["fake"], default_model="fake")


@pytest.fixture
async def worker_metrics(redis: Redis, settings_: Settings) -> AsyncIterator[str]:
    """A worker with its probes listener; yields the listener's base URL."""
    provider = OpenAIProvider(settings_)
    worker = Worker(redis, settings_, provider)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    task = asyncio.create_task(worker.run())
    try:
        async with serving(probe_app(worker.metrics.render, worker.intake, redis), sock):
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await provider.aclose()


async def scrape(session: aiohttp.ClientSession, url: str) -> Samples:
    async with session.get(url, headers=ADMIN) as response:
        assert response.status == 200
        return parse(await response.text())


async def follow(edge: EdgeClient, path: str, last_event_id: str | None = None
                 ) -> tuple[int, list[ClientEvent]]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    response = await edge.get(path, headers=headers)
    return response.status, await events_of(response.content)


async def create_stream(edge: EdgeClient, key: str, prompt: str) -> dict[str, Any]:
    response = await edge.post("/v1/streams", json={"prompt": prompt, "model": "fake"},
                               headers=bearer(key))
    assert response.status == 202
    created: dict[str, Any] = await response.json()
    return created


async def events_of(lines: aiohttp.StreamReader) -> list[ClientEvent]:
    return [ClientEvent(i or "", t, json.loads(d)) async for i, t, d in parse_sse(lines)]


async def test_a_scripted_run_moves_each_metric_by_what_happened(
    redis: Redis, settings_: Settings, aiohttp_client: ClientFactory, worker_metrics: str
) -> None:
    edge: EdgeClient = await aiohttp_client(create_app(settings_))
    key = (await new_key(edge, "acme"))["key"]
    session = aiohttp.ClientSession()
    edge_url = str(edge.make_url("/metrics"))
    try:
        edge0, worker0 = await scrape(session, edge_url), await scrape(
            session, worker_metrics + "/metrics")

        async def create(prompt: str) -> dict[str, Any]:
            return await create_stream(edge, key, prompt)

        normal = await create("a normal answer")
        status, events = await follow(edge, normal["events_url"])
        assert status == 200 and events[-1].type == "done"
        tokens = events[-1].data["tokens"]
        # resumed with the final cursor: 204, nothing to send
        status, _ = await follow(edge, normal["events_url"], events[-1].id)
        assert status == 204
        # cancelled while it streams
        slow = await create("#delay=100 an answer cut short")
        response = await edge.get(slow["events_url"])
        async for line in response.content:
            if line.startswith(b"event: token"):
                break
        cancelled = await edge.post(f"/v1/streams/{slow['id']}/cancel", headers=bearer(key))
        assert cancelled.status == 202
        rest = await events_of(response.content)
        assert rest[-1].data["finish_reason"] == "cancelled"
        # the connection drops after 3 chunks once: a new attempt, its clients a reset
        restarted = await create("#cut=1:3 an answer begun twice")
        status, events = await follow(edge, restarted["events_url"])
        assert [e.type for e in events].count("reset") == 1 and events[-1].type == "done"
        # the model refuses: error, dead-lettered
        failed = await create("#status=400 a refused prompt")
        status, events = await follow(edge, failed["events_url"])
        assert events[-1].type == "error" and events[-1].data["code"] == "upstream_400"
        # a cursor for a stream whose record expired: 410
        gone = await edge.get(f"/v1/streams/{keys.new_stream_id()}/events",
                              headers={**bearer(key), "Last-Event-ID": "abc.3"})
        assert gone.status == 410
        # credentials refused
        assert (await edge.post("/v1/streams", json={"prompt": "x"})).status == 401
        assert (await edge.get(normal["events_url"].replace("token=", "token=x"))).status == 401

        async def worker_done() -> Samples:
            # The last job's dead letter, release and ack trail its terminal event,
            # and its task leaves the running gauge only after the ack.
            while True:
                samples = await scrape(session, worker_metrics + "/metrics")
                if moved(worker0, samples, "tokenwire_worker_dead_letters_total",
                         reason="upstream_400") == 1 and value(
                             samples, "tokenwire_worker_running") == 0:
                    return samples
                await asyncio.sleep(0.05)

        worker1 = await asyncio.wait_for(worker_done(), 10)
        edge1 = await scrape(session, edge_url)
    finally:
        await session.close()

    def w(name: str, **labels: str) -> float:
        return moved(worker0, worker1, name, **labels)

    def e(name: str, **labels: str) -> float:
        return moved(edge0, edge1, name, **labels)

    # the worker
    assert w("tokenwire_worker_attempts_total", outcome="done") == 2
    assert w("tokenwire_worker_attempts_total", outcome="cancelled") == 1
    assert w("tokenwire_worker_attempts_total", outcome="restart") == 1
    assert w("tokenwire_worker_attempts_total", outcome="error") == 1
    assert w("tokenwire_worker_upstream_errors_total", code="upstream_400") == 1
    assert w("tokenwire_worker_upstream_errors_total", code="upstream_unavailable") == 1
    assert w("tokenwire_worker_dead_letters_total", reason="upstream_400") == 1
    assert w("tokenwire_worker_queue_wait_seconds_count") == 4  # first attempts only
    assert w("tokenwire_worker_generation_seconds_count", outcome="done") == 2
    assert w("tokenwire_worker_generation_seconds_count", outcome="restart") == 1
    assert w("tokenwire_worker_cancel_latency_seconds_count") == 1
    # one TTFT per call that produced text: normal, cancelled, restarted twice
    assert w("tokenwire_worker_ttft_seconds_count", model="fake") == 4
    assert w("tokenwire_worker_tokens_total", model="fake") >= tokens
    assert w("tokenwire_worker_inter_token_seconds_count", model="fake") >= tokens - 1
    # the edge
    assert e("tokenwire_streams_created_total") == 4
    assert e("tokenwire_edge_requests_total", route="/v1/streams", method="POST",
             status="202") == 4
    assert e("tokenwire_edge_requests_total", route="/v1/streams", method="POST",
             status="401") == 1
    assert e("tokenwire_edge_requests_total", route="/v1/streams/{stream_id}/events",
             method="GET", status="204") == 1
    assert e("tokenwire_edge_requests_total", route="/v1/streams/{stream_id}/events",
             method="GET", status="410") == 1
    assert e("tokenwire_edge_auth_refusals_total", reason="unauthorized") == 1
    assert e("tokenwire_edge_auth_refusals_total", reason="invalid_token") == 1
    assert e("tokenwire_edge_resumes_total", outcome="complete") == 1
    assert e("tokenwire_edge_resumes_total", outcome="gone") == 1
    assert value(edge1, "tokenwire_dead_letters") == 1
    assert value(edge1, "tokenwire_queue_jobs") == 0
    assert value(edge1, "tokenwire_edge_redis_up") == 1


async def test_the_worker_probes_say_alive_ready_and_not_ready(
    redis: Redis, settings: Settings
) -> None:
    from tokenwire.worker.providers import SimulatedProvider

    worker = Worker(redis, settings, SimulatedProvider(100.0, 0))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with serving(probe_app(worker.metrics.render, worker.intake, redis), sock), \
            aiohttp.ClientSession() as session:
        async def status(path: str) -> int:
            async with session.get(base + path) as response:
                return response.status

        assert (await status("/healthz"), await status("/readyz")) == (200, 503)  # not started
        task = asyncio.create_task(worker.run())

        async def ready() -> bool:
            return await status("/readyz") == 200

        await eventually(ready, 10)
        async with session.get(base + "/metrics") as response:
            assert "tokenwire_worker_capacity" in await response.text()
        worker.stop()
        assert await status("/readyz") == 503  # intake stopped
        assert await status("/healthz") == 200
        await asyncio.wait_for(task, 10)


def test_a_stuck_intake_loop_fails_liveness_unless_it_waits_for_a_slot() -> None:
    from tokenwire.worker.probes import STUCK_AFTER_SECONDS, IntakeState

    now = [0.0]
    intake = IntakeState(clock=lambda: now[0])
    intake.started()
    now[0] += STUCK_AFTER_SECONDS + 1
    assert intake.stuck_for() is not None
    intake.beat()
    assert intake.stuck_for() is None
    with intake.waiting_for_a_slot():
        now[0] += 10 * STUCK_AFTER_SECONDS  # every slot busy with long generations
        assert intake.stuck_for() is None
    assert intake.stuck_for() is None



def edge_made(events: list[ClientEvent]) -> int:
    """Frames without a Redis append time (no delivery lag): the edge's own
    ``reset`` and ``snapshot``."""
    return sum(1 for event in events if event.type in ("reset", "snapshot"))


async def test_the_delivery_path_moves_by_what_each_client_was_written(
    redis: Redis, settings_: Settings, aiohttp_client: ClientFactory, worker_metrics: str
) -> None:
    """SSE and WebSocket clients that followed from the start, a cancelled
    stream, resumes (exact, reset twice, snapshot, 204), a late joiner and the
    edge's pub/sub connection killed mid-stream: delivery lag, time to first
    token, resumes, events sent, connections and hub lag events, each by what
    the clients were written."""
    edge: EdgeClient = await aiohttp_client(create_app(settings_))
    key = (await new_key(edge, "acme"))["key"]
    session = aiohttp.ClientSession()
    edge_url = str(edge.make_url("/metrics"))
    frames = {"sse": 0, "ws": 0}  # frames each transport wrote
    unstamped = 0  # of them, the edge's own (SSE only here)
    try:
        before = await scrape(session, edge_url)

        async def create(prompt: str) -> dict[str, Any]:
            return await create_stream(edge, key, prompt)

        async def sse(path: str, last_event_id: str | None = None) -> list[ClientEvent]:
            nonlocal unstamped
            status, events = await follow(edge, path, last_event_id)
            assert status == 200
            frames["sse"] += len(events)
            unstamped += edge_made(events)
            return events

        # followed from the start (the first token comes 300 ms after the job starts)
        normal = await create("#first=300 a normal answer")
        events = await sse(normal["events_url"])
        assert events[-1].type == "done"
        over_ws = await create("#first=300 an answer over a websocket")
        async with edge.ws_connect(over_ws["ws_url"]) as ws:
            received = [json.loads(message.data) async for message in ws]
        assert received[-1]["type"] == "done"
        frames["ws"] += len(received)
        # cancelled while it streams: its client followed from the start too
        slow = await create("#first=300 #delay=100 an answer cut short")
        response = await edge.get(slow["events_url"])
        async for line in response.content:
            if line.startswith(b"event: token"):
                break
        assert (await edge.post(f"/v1/streams/{slow['id']}/cancel",
                                headers=bearer(key))).status == 202
        rest = await events_of(response.content)
        assert rest[-1].data["finish_reason"] == "cancelled"
        frames["sse"] += 1 + len(rest)  # the token line read above, then the rest
        # resumed: exactly after its cursor; another epoch and a cursor ahead (reset)
        await sse(normal["events_url"], events[2].id)
        replay = await sse(normal["events_url"], "0ldepoch.5")
        assert replay[0].type == "reset"
        ahead = await sse(normal["events_url"], f"{events[0].epoch}.{events[-1].seq + 50}")
        assert ahead[0].data["reason"] == "cursor_ahead"
        # history trimmed: reset and a snapshot
        trimmed = await create("#first=300 an answer whose history is trimmed")
        kept = await sse(trimmed["events_url"])
        await redis.xtrim(keys.events(trimmed["id"]), maxlen=3, approximate=False)
        replay = await sse(trimmed["events_url"], kept[2].id)
        assert [e.type for e in replay] == ["reset", "snapshot", "done"]
        # nothing after the final cursor: 204
        status, _ = await follow(edge, normal["events_url"], events[-1].id)
        assert status == 204
        # a late joiner replays from the start: no time to first token of its own
        await sse(normal["events_url"])
        # the edge's pub/sub connection killed mid-stream: its subscribers re-read
        cut = await create("#first=300 #delay=100 an answer across a lost connection")
        response = await edge.get(cut["events_url"])
        async for line in response.content:
            if line.startswith(b"event: token"):
                break
        for client in await redis.client_list(_type="pubsub"):
            if int(client.get("ssub", 0)):  # the hub's (sharded channels), not the worker's
                await redis.client_kill_filter(_id=client["id"])
        rest = await events_of(response.content)
        assert rest[-1].type == "done"
        frames["sse"] += 1 + len(rest)
        after = await scrape(session, edge_url)
    finally:
        await session.close()

    def e(name: str, **labels: str) -> float:
        return moved(before, after, name, **labels)

    assert unstamped == 4  # three resets, one snapshot
    for transport in ("sse", "ws"):
        assert e("tokenwire_edge_events_sent_total", transport=transport) == frames[transport]
        assert e("tokenwire_edge_delivery_lag_seconds_count", transport=transport) == \
            frames[transport] - (unstamped if transport == "sse" else 0)
        assert value(after, "tokenwire_edge_connections", transport=transport) == 0
    assert e("tokenwire_edge_delivery_lag_seconds_sum", transport="sse") > 0
    # normal, cancelled, trimmed, across the lost connection; not the resumes, not the
    # late joiner
    assert e("tokenwire_edge_ttft_seconds_count", transport="sse") == 4
    assert e("tokenwire_edge_ttft_seconds_count", transport="ws") == 1
    assert e("tokenwire_edge_ttft_seconds_sum", transport="ws") >= 0.3  # the model's 300 ms
    assert e("tokenwire_edge_resumes_total", outcome="exact") == 1
    assert e("tokenwire_edge_resumes_total", outcome="reset") == 2
    assert e("tokenwire_edge_resumes_total", outcome="snapshot") == 1
    assert e("tokenwire_edge_resumes_total", outcome="complete") == 1
    assert e("tokenwire_hub_lag_events_total") >= 1  # one subscriber, signalled (twice)


def token(content: str) -> PendingEvent:
    return PendingEvent("token", dumps({"content": content}), content)


async def test_a_slow_consumer_moves_slow_consumers_lag_events_and_merged_frames(
    redis: Redis, redis_url: str, aiohttp_client: ClientFactory
) -> None:
    """A client that stops reading (a small receive window) while its stream
    grows: its backlog overflows once (a hub lag event), the tokens queued
    behind the stalled write are merged, and it is let go as a slow consumer."""
    settings = make_settings(redis_url, client_backlog_chars=1024, slow_consumer_seconds=1.0,
                             metrics_public=True)
    edge: EdgeClient = await aiohttp_client(create_app(settings))
    store = StreamStore(redis, settings)
    job = new_job("a stream nobody reads")
    await store.create(job, None, "fp")
    attempt = await store.begin(job, "1-0", "w1")
    assert isinstance(attempt, Attempt)
    before = parse(await (await edge.get("/metrics")).text())
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(stalled, (edge.host, edge.port))
        await loop.sock_sendall(stalled, f"GET /v1/streams/{job.stream_id}/events HTTP/1.1\r\n"
                                f"Host: {edge.host}\r\n\r\n".encode())

        async def slow_consumer_let_go() -> bool:
            samples = parse(await (await edge.get("/metrics")).text())
            return moved(before, samples, "tokenwire_edge_slow_consumers_total") == 1

        seq = 2  # after ``start``
        async with asyncio.timeout(20):
            while not await slow_consumer_let_go():  # never read: the socket fills up
                batch = [token("merged " * 4) for _ in range(10)] + [token("x" * 32_768)]
                await store.append(attempt, seq, batch)
                seq += len(batch)
                await asyncio.sleep(0.02)
        after = parse(await (await edge.get("/metrics")).text())
    finally:
        stalled.close()
    assert moved(before, after, "tokenwire_hub_lag_events_total") == 1  # overflowed once
    assert moved(before, after, "tokenwire_edge_frames_merged_total") > 0
    # every frame written had its delivery lag observed, merged ones included (once each)
    assert moved(before, after, "tokenwire_edge_delivery_lag_seconds_count", transport="sse") \
        == moved(before, after, "tokenwire_edge_events_sent_total", transport="sse")
    assert moved(before, after, "tokenwire_edge_slow_consumers_total") == 1


async def test_readiness_lists_the_job_partitions_the_intake_cannot_read(
    redis: Redis, settings: Settings, aiohttp_client: ClientFactory
) -> None:
    """A partition whose master is down (its reads fail) is listed; the worker
    stays ready while it reads any, and is not once it reads none."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from tokenwire.jobqueue import Delivery, JobQueue, Partition
    from tokenwire.worker.intake import Intake
    from tokenwire.worker.probes import IntakeState

    queue = JobQueue(redis, "probe-test", 60_000, 2)
    await queue.ensure_groups()
    down: set[str] = set()
    read_new = queue.read_new

    async def read_unless_down(partition: Partition, count: int) -> list[Delivery]:
        if partition.stream in down:
            raise RedisConnectionError("its master is down")
        return await read_new(partition, count)

    queue.read_new = read_unless_down  # type: ignore[method-assign]
    state = IntakeState()
    state.partitions = len(queue.partitions)
    state.started()
    intake = Intake(queue, 0.0, 60.0, state.partition_read)  # every take sweeps all
    client = await aiohttp_client(probe_app(lambda: b"", state, redis))

    async def readiness_after_sweeps() -> tuple[int, dict[str, Any]]:
        for _ in queue.partitions:  # each sweep starts one partition further
            with contextlib.suppress(RedisConnectionError):
                await intake.take(1)
        response = await client.get("/readyz")
        return response.status, await response.json()

    assert await readiness_after_sweeps() == (200, {"status": "ready",
                                                    "unreadable_partitions": []})
    down.add(queue.partitions[0].stream)
    assert await readiness_after_sweeps() == (200, {
        "status": "ready", "unreadable_partitions": [queue.partitions[0].stream]})
    down.update(p.stream for p in queue.partitions)
    assert await readiness_after_sweeps() == (503, {
        "status": "no_partition_readable",
        "unreadable_partitions": sorted(p.stream for p in queue.partitions)})
    down.clear()
    assert (await readiness_after_sweeps())[0] == 200
