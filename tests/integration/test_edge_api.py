"""The edge's HTTP API through a real HTTP client, with a real Valkey and worker."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import WSMsgType
from redis.asyncio import Redis

from tests.conftest import ADMIN_KEY, make_settings, running_worker
from tests.integration.edge_support import (
    EdgeClient,
    assemble,
    create,
    read_events,
    websocket,
)
from tests.support.jobs import queued_jobs
from tests.support.streams import begin_attempt
from tokenwire import keys
from tokenwire.client import ClientEvent, Transcript, parse_sse
from tokenwire.edge import keys as appkeys
from tokenwire.edge.app import create_app
from tokenwire.events import dumps
from tokenwire.settings import Settings
from tokenwire.store import Attempt, PendingEvent, StreamStore
from tokenwire.worker.providers.simulated import simulated_tokens

ClientFactory = Callable[..., Any]


def expected_text(prompt: str, max_tokens: int | None = None) -> str:
    tokens = simulated_tokens(prompt, 120)
    return "".join(tokens if max_tokens is None else tokens[:max_tokens])


@pytest.fixture
def edge_settings(redis_url: str) -> Settings:
    # ~0.6 s per stream: long enough to join live, short enough for a fast suite.
    return make_settings(redis_url, simulated_tokens_per_second=200.0, default_buffer="none",
                         admin_key=ADMIN_KEY)


@pytest.fixture
async def client(redis: Redis, edge_settings: Settings, aiohttp_client: ClientFactory
                 ) -> AsyncIterator[EdgeClient]:
    async with running_worker(redis, edge_settings):
        yield await aiohttp_client(create_app(edge_settings))


@pytest.fixture
async def idle_client(redis: Redis, edge_settings: Settings, aiohttp_client: ClientFactory
                      ) -> EdgeClient:
    """An edge with no worker: streams stay queued."""
    edge: EdgeClient = await aiohttp_client(create_app(edge_settings))
    return edge


def contiguous(events: list[ClientEvent]) -> bool:
    """Cursors increase by 1, except across token frames that merged several events."""
    steps = itertools.pairwise(events)
    return all(b.seq == a.seq + 1 or (b.type == "token" and b.seq > a.seq) for a, b in steps)


# --- creating and reading -------------------------------------------------------------


async def test_create_then_stream_delivers_the_exact_text(client: EdgeClient) -> None:
    response = await client.post("/v1/streams", json={"prompt": "hello edge"})
    assert response.status == 202
    body = await response.json()
    assert body["status"] == "queued"
    assert body["events_url"] == f"/v1/streams/{body['id']}/events"
    assert body["ws_url"] == f"/v1/streams/{body['id']}/ws"
    assert response.headers["Location"] == f"/v1/streams/{body['id']}"
    events = await read_events(client, body["id"])
    transcript = assemble(events)
    assert [e.type for e in events[:1]] == ["start"] and events[-1].type == "done"
    assert contiguous(events)
    assert transcript.text == expected_text("hello edge")
    done = events[-1].data
    assert done["sha256"] == hashlib.sha256(transcript.text.encode()).hexdigest()
    assert done["finish_reason"] == "stop" and done["tokens"] == 121
    assert {"duration_ms", "tokens_per_second", "usage"} <= done.keys()


async def test_sse_wire_format(redis: Redis, redis_url: str, aiohttp_client: ClientFactory
                               ) -> None:
    """The exact bytes: ``retry:`` inside the first event's block, heartbeats as
    comment lines with no blank line after them, and no block without data."""
    settings = make_settings(redis_url, simulated_tokens_per_second=100.0,
                             default_buffer="none", sse_ping_seconds=0.02)
    async with running_worker(redis, settings):
        client = await aiohttp_client(create_app(settings))
        stream_id = await create(client)
        response = await client.get(f"/v1/streams/{stream_id}/events")
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        body = (await response.read()).decode()
    assert body.endswith("\r\n\r\n")
    blocks = [block.split("\r\n") for block in body.removesuffix("\r\n\r\n").split("\r\n\r\n")]
    pings, last_seq = 0, 0
    for index, lines in enumerate(blocks):
        while lines[0] == ": ping":  # a heartbeat: one comment line, then the next block
            pings += 1
            lines.pop(0)
        if index == 0:
            retry = int(lines.pop(0).removeprefix("retry: "))
            assert 1000 <= retry <= 3000  # 2000 ms ± 50 %
        assert [line.split(": ", 1)[0] for line in lines] == ["id", "event", "data"], lines
        seq = int(lines[0].rsplit(".", 1)[1])
        # Strictly after the last: consecutive, unless a slow read let the edge
        # merge queued token frames into one (it carries the last one's id).
        assert seq > last_seq and (seq == last_seq + 1 or lines[1] == "event: token"), lines
        last_seq = seq
        json.loads(lines[2].removeprefix("data: "))
    assert pings > 0, "no heartbeat in a stream that lasts > 1 s"
    assert blocks[0][1:] == ["event: start", blocks[0][2]]
    assert json.loads(blocks[0][2].removeprefix("data: "))["stream_id"] == stream_id
    assert blocks[-1][1] == "event: done"


async def test_start_data_names_model_epoch_and_attempt(client: EdgeClient) -> None:
    stream_id = await create(client, {"prompt": "x", "model": "simulated"})
    [start] = await read_events(client, stream_id, limit=1)
    assert start.data == {"stream_id": stream_id, "model": "simulated",
                          "epoch": start.epoch, "attempt": 1}


async def test_max_tokens_ends_with_length(client: EdgeClient) -> None:
    stream_id = await create(client, {"prompt": "short", "max_tokens": 5})
    events = await read_events(client, stream_id)
    assert assemble(events).text == expected_text("short", 5)
    assert events[-1].data["finish_reason"] == "length"


# --- resume ------------------------------------------------------------------------------


async def test_resume_with_last_event_id_continues_exactly(client: EdgeClient) -> None:
    stream_id = await create(client)
    first = await read_events(client, stream_id, limit=7)
    rest = await read_events(client, stream_id, headers={"Last-Event-ID": first[-1].id})
    assert rest[0].seq > first[-1].seq
    assert contiguous(first + rest)
    assert assemble(first, rest).text == expected_text("hello edge")


async def test_resume_with_query_parameter_and_header_wins(client: EdgeClient) -> None:
    stream_id = await create(client)
    first = await read_events(client, stream_id, limit=6)
    by_query = await read_events(client, stream_id, params={"last_event_id": first[2].id})
    assert assemble(first[:3], by_query).text == expected_text("hello edge")
    # Had the query won over the header, text after first[1] would repeat.
    both = await read_events(client, stream_id, headers={"Last-Event-ID": first[4].id},
                             params={"last_event_id": first[1].id})
    assert assemble(first[:5], both).text == expected_text("hello edge")


async def test_an_empty_last_event_id_header_leaves_the_query_in_charge(client: EdgeClient
                                                                       ) -> None:
    # Found by the OpenAPI fuzz test: an empty header used to "win" and hide
    # the query, so a malformed ?last_event_id= was silently ignored.
    stream_id = await create(client)
    first = await read_events(client, stream_id, limit=6)
    resumed = await read_events(client, stream_id, headers={"Last-Event-ID": ""},
                                params={"last_event_id": first[2].id})
    assert assemble(first[:3], resumed).text == expected_text("hello edge")
    response = await client.get(f"/v1/streams/{stream_id}/events",
                                headers={"Last-Event-ID": ""}, params={"last_event_id": "x"})
    assert await error_of(response) == (400, "bad_cursor")


async def test_a_malformed_query_cursor_is_400_even_where_the_header_wins(
        client: EdgeClient) -> None:
    # Found by the OpenAPI fuzz test: the query was not even parsed.
    stream_id = await create(client)
    first = await read_events(client, stream_id, limit=3)
    response = await client.get(f"/v1/streams/{stream_id}/events",
                                headers={"Last-Event-ID": first[-1].id},
                                params={"last_event_id": "not a cursor"})
    assert await error_of(response) == (400, "bad_cursor")


async def test_many_drops_still_assemble_the_exact_text(client: EdgeClient) -> None:
    stream_id = await create(client, {"prompt": "drop me often"})
    transcript = Transcript()
    while transcript.terminal is None:
        headers = {"Last-Event-ID": transcript.last_id} if transcript.last_id else {}
        for event in await read_events(client, stream_id, headers=headers, limit=3):
            transcript.apply(event)
    assert transcript.text == expected_text("drop me often")
    assert transcript.resets == 0


async def test_resume_after_the_end_is_204(client: EdgeClient) -> None:
    stream_id = await create(client)
    events = await read_events(client, stream_id)
    response = await client.get(f"/v1/streams/{stream_id}/events",
                                headers={"Last-Event-ID": events[-1].id})
    assert response.status == 204


async def test_finished_stream_whose_events_expired_is_204(client: EdgeClient, redis: Redis
                                                           ) -> None:
    stream_id = await create(client)
    events = await read_events(client, stream_id)
    await redis.delete(keys.events(stream_id))
    response = await client.get(f"/v1/streams/{stream_id}/events",
                                headers={"Last-Event-ID": events[3].id})
    assert response.status == 204
    status = await (await client.get(f"/v1/streams/{stream_id}")).json()
    assert status["text"] == assemble(events).text


async def test_cursor_of_another_epoch_gets_reset_then_the_stream(client: EdgeClient) -> None:
    stream_id = await create(client)
    events = await read_events(client, stream_id, headers={"Last-Event-ID": "0ldepoch.5"})
    assert events[0].type == "reset"
    assert events[0].data == {"reason": "new_attempt", "epoch": events[1].epoch}
    assert events[0].id == f"{events[1].epoch}.0"
    assert events[1].type == "start" and events[1].seq == 1
    assert assemble(events).text == expected_text("hello edge")


async def test_cursor_ahead_of_the_stream_gets_reset(client: EdgeClient) -> None:
    stream_id = await create(client)
    events = await read_events(client, stream_id)
    ahead = f"{events[0].epoch}.{events[-1].seq + 50}"
    replay = await read_events(client, stream_id, headers={"Last-Event-ID": ahead})
    assert replay[0].type == "reset" and replay[0].data["reason"] == "cursor_ahead"
    assert assemble(replay).text == expected_text("hello edge")


async def test_trimmed_history_gets_reset_and_a_snapshot(client: EdgeClient, redis: Redis
                                                         ) -> None:
    stream_id = await create(client)
    events = await read_events(client, stream_id)
    await redis.xtrim(keys.events(stream_id), maxlen=3, approximate=False)
    replay = await read_events(client, stream_id, headers={"Last-Event-ID": events[2].id})
    # The snapshot covers all text up to the newest kept point; then the rest.
    assert [e.type for e in replay] == ["reset", "snapshot", "done"]
    assert replay[0].data["reason"] == "history_trimmed"
    assert replay[1].seq == events[-2].seq
    assert assemble(replay).text == expected_text("hello edge")


async def test_late_joiner_may_ask_for_a_snapshot(client: EdgeClient) -> None:
    stream_id = await create(client)
    await read_events(client, stream_id)
    events = await read_events(client, stream_id, params={"snapshot": "1"})
    assert [e.type for e in events] == ["snapshot", "done"]
    assert events[0].data["content"] == expected_text("hello edge")


async def test_one_request_form_streams_the_new_stream(client: EdgeClient) -> None:
    response = await client.post("/v1/streams", json={"prompt": "in one go"},
                                 headers={"Accept": "text/event-stream"})
    assert response.status == 200
    stream_id = response.headers["X-Stream-ID"]
    assert keys.is_stream_id(stream_id)
    transcript = Transcript()
    async for event_id, event_type, data in parse_sse(response.content):
        transcript.apply(ClientEvent(event_id or "", event_type, json.loads(data)))
    assert transcript.text == expected_text("in one go")


async def test_an_http_1_0_client_gets_unchunked_sse_until_the_end(client: EdgeClient) -> None:
    """Live frames are written straight to the socket; they must follow the
    framing aiohttp chose for the response (HTTP/1.0: no chunked encoding)."""
    stream_id = await create(client, {"prompt": "old client"})
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET /v1/streams/{stream_id}/events HTTP/1.0\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 30)  # to EOF: the edge closes after `done`
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head.lower()
    fields = (b"id: ", b"event: ", b"data: ", b"retry: ", b": ")
    strays = [line for line in body.split(b"\r\n") if line and not line.startswith(fields)]
    assert strays == []  # e.g. no chunk-size lines
    events = [ClientEvent(i or "", t, json.loads(d))
              async for i, t, d in parse_sse(_lines_of(body))]
    assert events[-1].type == "done" and contiguous(events)
    assert assemble(events).text == expected_text("old client")


def _lines_of(body: bytes) -> AsyncIterator[bytes]:
    async def lines() -> AsyncIterator[bytes]:
        for line in body.splitlines(keepends=True):
            yield line
    return lines()


async def test_several_viewers_share_one_live_subscription(client: EdgeClient) -> None:
    stream_id = await create(client, {"prompt": "shared"})
    viewers = await asyncio.gather(*(read_events(client, stream_id) for _ in range(4)))
    for events in viewers:
        assert assemble(events).text == expected_text("shared")
    # Frame boundaries may differ (a viewer catching up gets merged frames);
    # where they end may not.
    assert len({events[-1].id for events in viewers}) == 1


async def test_a_new_attempt_while_following_resets_the_client(
    idle_client: EdgeClient, redis: Redis, edge_settings: Settings
) -> None:
    """A worker that died is replaced mid-stream: the follower must not splice."""
    store = StreamStore(redis, edge_settings)
    stream_id = await create(idle_client)
    first = await begin_attempt(store, stream_id, "w1")
    assert isinstance(first, Attempt)
    await store.append(first, 2, [PendingEvent("token", dumps({"content": "old "}), "old ")])
    response = await idle_client.get(f"/v1/streams/{stream_id}/events")
    frames = parse_sse(response.content)
    events = [ClientEvent(i or "", t, json.loads(d))
              for i, t, d in [await anext(frames), await anext(frames)]]  # the first attempt
    second = await begin_attempt(store, stream_id, "w2")
    assert isinstance(second, Attempt)
    await store.append(second, 2, [PendingEvent("token", dumps({"content": "new"}), "new")])
    await store.append(second, 3, [PendingEvent("done", dumps({"finish_reason": "stop"}))],
                       final_status="done")
    async with asyncio.timeout(5):
        events += [ClientEvent(i or "", t, json.loads(d)) async for i, t, d in frames]
    response.close()
    assert [e.type for e in events] == ["start", "token", "reset", "start", "token", "done"]
    assert assemble(events).text == "new"


# --- WebSocket -------------------------------------------------------------------------


async def ws_events(ws: Any, limit: int | None = None) -> list[ClientEvent]:
    events: list[ClientEvent] = []
    async for message in ws:
        if message.type != WSMsgType.TEXT:
            break
        frame = json.loads(message.data)
        event_id, event_type = frame.pop("id"), frame.pop("type")
        events.append(ClientEvent(event_id, event_type, frame))
        if limit is not None and len(events) >= limit:
            break
    return events


async def test_websocket_delivers_and_resumes(client: EdgeClient) -> None:
    stream_id = await create(client, {"prompt": "over ws"})
    async with websocket(client, stream_id) as ws:
        first = await ws_events(ws, limit=5)
    async with websocket(client, stream_id, first[-1].id) as ws:
        rest = await ws_events(ws)
        assert ws.close_code == 1000
    assert contiguous(first + rest)
    assert assemble(first, rest).text == expected_text("over ws")


async def test_live_websocket_frames_of_every_length_class_arrive_intact(
    idle_client: EdgeClient, redis: Redis, edge_settings: Settings
) -> None:
    """Live frames are written straight to the socket with their own header:
    payloads under 126 bytes, under 64 KiB and above take three header forms."""
    store = StreamStore(redis, edge_settings)
    stream_id = await create(idle_client)
    attempt = await begin_attempt(store, stream_id, "w1")
    assert isinstance(attempt, Attempt)
    contents = ["short", "é" * 150, "x" * 70_000, "tail ✓"]
    async with websocket(idle_client, stream_id) as ws:
        assert [e.type for e in await ws_events(ws, limit=1)] == ["start"]  # now live
        for seq, content in enumerate(contents, start=2):
            await store.append(attempt, seq, [PendingEvent("token", dumps({"content": content}),
                                                           content)])
            await asyncio.sleep(0.05)  # one frame each, not merged by a backlog
        await store.append(attempt, 6, [PendingEvent("done", dumps({"finish_reason": "stop"}))],
                           final_status="done")
        events = await ws_events(ws)
    assert [e.data.get("content") for e in events[:-1]] == contents
    assert [e.seq for e in events] == [2, 3, 4, 5, 6] and events[-1].type == "done"


async def test_websocket_cancel(redis: Redis, redis_url: str, aiohttp_client: ClientFactory
                                ) -> None:
    settings = make_settings(redis_url, simulated_tokens_per_second=20.0)
    async with running_worker(redis, settings):
        client = await aiohttp_client(create_app(settings))
        stream_id = await create(client)
        async with websocket(client, stream_id) as ws:
            events = await ws_events(ws, limit=2)
            await ws.send_json({"type": "cancel"})
            events += await asyncio.wait_for(ws_events(ws), 5)
    assert events[-1].type == "done"
    assert events[-1].data["finish_reason"] == "cancelled"
    # What was delivered is the start of the model's output, and nothing after it.
    text = assemble(events).text
    assert expected_text("hello edge").startswith(text)
    assert len(text) < len(expected_text("hello edge"))
    assert events[-1].data["sha256"] == hashlib.sha256(text.encode()).hexdigest()


async def test_a_plain_get_of_the_websocket_url_is_a_clear_400(client: EdgeClient) -> None:
    stream_id = await create(client)
    response = await client.get(f"/v1/streams/{stream_id}/ws")
    assert await error_of(response) == (400, "websocket_required")


async def test_websocket_after_the_end_closes_normally(client: EdgeClient) -> None:
    stream_id = await create(client)
    events = await read_events(client, stream_id)
    async with websocket(client, stream_id, events[-1].id) as ws:
        assert await ws_events(ws) == []
        assert ws.close_code == 1000


# --- status and cancel -------------------------------------------------------------------


async def test_status_returns_text_consistent_with_its_cursor(client: EdgeClient) -> None:
    stream_id = await create(client)
    events = await read_events(client, stream_id)
    status = await (await client.get(f"/v1/streams/{stream_id}")).json()
    assert status["status"] == "done"
    assert status["cursor"] == events[-1].id
    assert status["text"] == assemble(events).text == expected_text("hello edge")
    assert status["done"]["sha256"] == events[-1].data["sha256"]


async def test_cancel_while_queued_ends_the_stream_at_once(idle_client: EdgeClient) -> None:
    stream_id = await create(idle_client)
    for _ in range(2):  # idempotent
        response = await idle_client.post(f"/v1/streams/{stream_id}/cancel")
        assert response.status == 202
        assert (await response.json()) == {"id": stream_id, "status": "cancelled"}
    events = await read_events(idle_client, stream_id)
    assert [e.type for e in events] == ["start", "done"]
    assert events[-1].data["finish_reason"] == "cancelled"


async def test_cancel_after_the_end_changes_nothing(client: EdgeClient) -> None:
    stream_id = await create(client)
    events = await read_events(client, stream_id)
    response = await client.post(f"/v1/streams/{stream_id}/cancel")
    assert response.status == 202
    assert (await response.json()) == {"id": stream_id, "status": "done"}
    status = await (await client.get(f"/v1/streams/{stream_id}")).json()
    assert status["status"] == "done" and status["cursor"] == events[-1].id
    assert status["text"] == expected_text("hello edge")


# --- errors: a clear JSON error, and nothing written -------------------------------------


async def error_of(response: Any) -> tuple[int, str]:
    body = await response.json()
    assert set(body["error"]) >= {"code", "message"}
    return response.status, body["error"]["code"]


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"data": "{}", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
    ({"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400,
     "malformed_json"),
    ({"data": "[1, 2]", "headers": {"Content-Type": "application/json"}}, 400, "malformed_json"),
    ({"data": b"\xff\xfe", "headers": {"Content-Type": "application/json"}}, 400,
     "malformed_json"),
    ({"json": {"prompt": ""}}, 422, "invalid_job"),
    ({"json": {"prompt": "x", "temperature": 9}}, 422, "invalid_job"),
    ({"json": {"prompt": "x", "max_tokens": 10**9}}, 422, "invalid_job"),
    ({"json": {"prompt": "\ud800"}}, 400, "malformed_json"),  # a lone surrogate escape
    # What the OpenAPI document says is not an integer or a number is not one:
    # no coercion from strings or booleans.
    ({"json": {"prompt": "x", "max_tokens": "5"}}, 422, "invalid_job"),
    ({"json": {"prompt": "x", "max_tokens": True}}, 422, "invalid_job"),
    ({"json": {"prompt": "x", "temperature": "1"}}, 422, "invalid_job"),
    ({"json": {"prompt": "x" * 300_000}}, 413, "too_large"),
    ({"json": {"prompt": "x"}, "headers": {"Idempotency-Key": "bad key"}}, 400,
     "bad_idempotency_key"),
])
async def test_bad_jobs_are_refused_and_change_nothing(
    idle_client: EdgeClient, redis: Redis, kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = await idle_client.post("/v1/streams", **kwargs)
    assert await error_of(response) == (status, code)
    assert await queued_jobs(redis) == 0
    assert [k async for k in redis.scan_iter("tw:{*")] == []


async def test_idempotent_create(idle_client: EdgeClient, redis: Redis) -> None:
    headers = {"Idempotency-Key": "req-42"}
    first = await idle_client.post("/v1/streams", json={"prompt": "a"}, headers=headers)
    again = await idle_client.post("/v1/streams", json={"prompt": "a"}, headers=headers)
    assert (await first.json())["id"] == (await again.json())["id"]
    assert await queued_jobs(redis) == 1
    other = await idle_client.post("/v1/streams", json={"prompt": "b"}, headers=headers)
    assert await error_of(other) == (422, "idempotency_conflict")


async def test_a_full_queue_answers_429_with_retry_after(
    redis: Redis, redis_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url, max_queue_length=1,
                                                             job_partitions=1)))
    await create(client)
    response = await client.post("/v1/streams", json={"prompt": "one too many"})
    assert await error_of(response) == (429, "queue_full")
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(("method", "path", "headers", "status", "code"), [
    ("GET", "/v1/streams/AAAAAAAAAAAAAAAAAAAAAA/events", {}, 404, "not_found"),
    ("GET", "/v1/streams/not-an-id/events", {}, 404, "not_found"),
    ("GET", "/v1/streams/AAAAAAAAAAAAAAAAAAAAAA", {}, 404, "not_found"),
    ("POST", "/v1/streams/AAAAAAAAAAAAAAAAAAAAAA/cancel", {}, 404, "not_found"),
    ("GET", "/v1/streams/AAAAAAAAAAAAAAAAAAAAAA/events", {"Last-Event-ID": "ab12.3"}, 410,
     "gone"),
    ("GET", "/v1/nothing-here", {}, 404, "not_found"),
    ("DELETE", "/v1/streams", {}, 405, "method_not_allowed"),
])
async def test_unknown_things_get_json_errors(idle_client: EdgeClient, method: str, path: str,
                                              headers: dict[str, str], status: int, code: str
                                              ) -> None:
    response = await idle_client.request(method, path, headers=headers)
    assert await error_of(response) == (status, code)


async def test_a_method_not_allowed_says_which_are(idle_client: EdgeClient) -> None:
    # Found by the OpenAPI fuzz test: the JSON error dropped aiohttp's Allow
    # header, which RFC 9110 requires on a 405.
    response = await idle_client.request("TRACE", "/v1/streams/AAAAAAAAAAAAAAAAAAAAAA")
    assert await error_of(response) == (405, "method_not_allowed")
    assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}


@pytest.mark.parametrize("cursor", ["garbage", "abc.-1", "a.b.c", "x" * 40 + ".1"])
async def test_malformed_cursors_are_400(idle_client: EdgeClient, cursor: str) -> None:
    stream_id = await create(idle_client)
    path = f"/v1/streams/{stream_id}/events"
    for response in (await idle_client.get(path, headers={"Last-Event-ID": cursor}),
                     await idle_client.get(path, params={"last_event_id": cursor})):
        assert await error_of(response) == (400, "bad_cursor")
    response = await idle_client.get(f"/v1/streams/{stream_id}/ws",
                                     params={"last_event_id": cursor})
    assert await error_of(response) == (400, "bad_cursor")


# --- operations -------------------------------------------------------------------------


async def test_health_readiness_and_metrics(client: EdgeClient) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["status"] == "ready"
    stream_id = await create(client)
    await read_events(client, stream_id)
    assert (await client.get("/metrics")).status == 401  # not public by default
    metrics = await (await client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
                                      )).text()
    assert "tokenwire_streams_created_total 1.0" in metrics
    assert 'tokenwire_edge_events_sent_total{transport="sse"}' in metrics


async def test_demo_page_is_served(client: EdgeClient) -> None:
    response = await client.get("/")
    assert response.status == 200
    assert '<script type="module" src="/demo.js">' in await response.text()
    script = await (await client.get("/demo.js")).text()
    assert 'from "/v1/client.js"' in script and 'START_URL = "/demo/conversations"' in script
    assert "new EventSource(" in await (await client.get("/v1/client.js")).text()


# --- transient answers: 200 + retry: for event streams, the status for JSON -------------


def reconnect_notice(body: str) -> tuple[int, dict[str, Any]]:
    """(retry ms, data) of a response that holds only a reconnect notice."""
    lines = body.split("\r\n")
    assert lines[1:3] == ["event: reconnect", lines[2]] and lines[3:] == ["", ""], body
    assert not any(line.startswith("id:") for line in lines)
    return int(lines[0].removeprefix("retry: ")), json.loads(lines[2].removeprefix("data: "))


async def test_a_draining_edge_asks_event_streams_to_come_back(idle_client: EdgeClient) -> None:
    stream_id = await create(idle_client)
    idle_client.app[appkeys.LIFECYCLE].draining = True
    events = await idle_client.get(f"/v1/streams/{stream_id}/events")
    assert events.status == 200 and events.content_type == "text/event-stream"
    retry_ms, data = reconnect_notice(await events.text())
    assert data["reason"] == "draining" and 1000 <= retry_ms <= 1500  # Retry-After: 1
    one_request = await idle_client.post("/v1/streams", json={"prompt": "x"},
                                         headers={"Accept": "text/event-stream"})
    assert one_request.status == 200
    assert reconnect_notice(await one_request.text())[1]["reason"] == "draining"
    as_json = await idle_client.post("/v1/streams", json={"prompt": "x"})
    assert await error_of(as_json) == (503, "draining")
    assert as_json.headers["Retry-After"] == "1"
    socket = await idle_client.get(f"/v1/streams/{stream_id}/ws", headers=WEBSOCKET_HANDSHAKE)
    assert await error_of(socket) == (503, "draining")  # no browser reconnects a WebSocket


#: The headers of a WebSocket handshake (RFC 6455), to see its refusal as a client gets it.
WEBSOCKET_HANDSHAKE = {"Upgrade": "websocket", "Connection": "Upgrade",
                       "Sec-WebSocket-Version": "13",
                       "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


async def test_a_full_queue_asks_an_event_stream_request_to_come_back(
    redis: Redis, redis_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url, max_queue_length=1,
                                                             job_partitions=1)))
    await create(client)
    response = await client.post("/v1/streams", json={"prompt": "one too many"},
                                 headers={"Accept": "text/event-stream"})
    assert response.status == 200
    retry_ms, data = reconnect_notice(await response.text())
    assert data["reason"] == "queue_full" and 2000 <= retry_ms <= 3000  # Retry-After: 2


async def test_a_cursor_on_an_unknown_stream_is_answered_at_once(
    idle_client: EdgeClient, redis: Redis
) -> None:
    """410 without polling Redis for the record (one HGETALL a request)."""
    def hgetall_calls(stats: dict[str, Any]) -> int:
        return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))

    before = hgetall_calls(await redis.info("commandstats"))
    for _ in range(10):
        response = await idle_client.get("/v1/streams/" + keys.new_stream_id() + "/events",
                                         headers={"Last-Event-ID": "ab12.3"})
        assert await error_of(response) == (410, "gone")
    assert hgetall_calls(await redis.info("commandstats")) - before == 10


async def test_websockets_are_pinged_by_the_edge(redis: Redis, redis_url: str,
                                                 aiohttp_client: ClientFactory) -> None:
    """One ticker pings every WebSocket (aiohttp's per-socket heartbeat is off)."""
    client = await aiohttp_client(create_app(make_settings(redis_url, ws_heartbeat_seconds=0.05)))
    stream_id = await create(client)  # no worker: the stream stays queued, the socket idle
    ws = await client.ws_connect(f"/v1/streams/{stream_id}/ws", autoping=False)
    try:
        message = await asyncio.wait_for(ws.receive(), 5)
    finally:
        await ws.close()
    assert message.type == WSMsgType.PING
