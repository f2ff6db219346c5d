"""The Python client, blocking and asyncio, against two real edges and a real
worker behind a scripted gateway: a drop mid-stream resumed on the other edge,
503/429 retried (honouring ``Retry-After``), final answers not retried, a
tokenized ``events_url`` followed as given, cancel, and 204 settled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from tests.conftest import make_settings, running_worker
from tests.support.gateway import Cut, Gateway, Status
from tokenwire import keys
from tokenwire.client import (
    AsyncTokenwireClient,
    CreatedStream,
    GaveUp,
    HTTPStatusError,
    RetryPolicy,
    StreamRef,
    TokenwireClient,
    Transcript,
)
from tokenwire.edge.app import create_app
from tokenwire.worker.providers.simulated import simulated_tokens

Kind = Literal["sync", "async"]
FAST = RetryPolicy(initial_delay=0.05, max_delay=0.5, max_attempts=8)


@dataclass
class Setup:
    gateway: Gateway
    url: str


@asynccontextmanager
async def running(redis: Redis, redis_url: str, tokens_per_second: float
                  ) -> AsyncIterator[Setup]:
    """A worker and two edges behind the gateway; one event per token."""
    settings = make_settings(redis_url, simulated_tokens_per_second=tokens_per_second,
                             default_buffer="none")
    async with running_worker(redis, settings), \
            TestServer(create_app(settings)) as edge_a, \
            TestServer(create_app(settings)) as edge_b:
        gateway = Gateway([str(edge_a.make_url("")).rstrip("/"),
                           str(edge_b.make_url("")).rstrip("/")])
        async with TestServer(gateway.app()) as front:
            yield Setup(gateway, str(front.make_url("")).rstrip("/"))


@pytest.fixture
async def setup(redis: Redis, redis_url: str) -> AsyncIterator[Setup]:
    async with running(redis, redis_url, 200.0) as ready:  # ~0.6 s: room to cut mid-way
        yield ready


@pytest.fixture
async def slow_setup(redis: Redis, redis_url: str) -> AsyncIterator[Setup]:
    async with running(redis, redis_url, 20.0) as ready:  # ~6 s: still running when cancelled
        yield ready


def expected(prompt: str) -> str:
    return "".join(simulated_tokens(prompt, 120))


async def create(url: str, prompt: str) -> CreatedStream:
    async with AsyncTokenwireClient(url) as client:
        return await client.create({"prompt": prompt})


async def follow(kind: Kind, url: str, stream: StreamRef,
                 retry: RetryPolicy = FAST) -> Transcript:
    """Follow with the blocking client (in a thread) or the asyncio one."""
    if kind == "async":
        async with AsyncTokenwireClient(url, retry=retry) as client:
            return await client.follow(stream)

    def blocking() -> Transcript:
        with TokenwireClient(url, retry=retry) as client:
            return client.follow(stream)

    return await asyncio.to_thread(blocking)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_drop_mid_stream_resumes_on_the_other_edge_exactly(setup: Setup,
                                                                   kind: Kind) -> None:
    created = await create(setup.url, f"drop me ({kind})")
    setup.gateway.script = [Cut(after_events=5)]
    transcript = await follow(kind, setup.url, created)
    assert transcript.text == expected(f"drop me ({kind})")
    assert transcript.resets == 0 and transcript.terminal is not None
    first, second = setup.gateway.events_requests()
    assert first.last_event_id is None
    assert second.last_event_id == transcript.events[4].id  # right after the 5th event
    assert first.upstream != second.upstream


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_503_and_429_are_retried_honouring_retry_after(setup: Setup, kind: Kind) -> None:
    created = await create(setup.url, f"busy edges ({kind})")
    setup.gateway.script = [Status(503, retry_after=1), Status(429)]
    transcript = await follow(kind, setup.url, created)
    assert transcript.text == expected(f"busy edges ({kind})")
    refused, busy, served = setup.gateway.events_requests()
    assert (refused.status, busy.status, served.status) == (503, 429, 200)
    assert busy.at - refused.at >= 0.9  # Retry-After: 1 was honoured (FAST alone: <= 0.1 s)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_final_answers_are_not_retried(setup: Setup, kind: Kind) -> None:
    with pytest.raises(HTTPStatusError) as unknown:
        await follow(kind, setup.url, keys.new_stream_id())
    assert unknown.value.status == 404 and unknown.value.code == "not_found"
    created = await create(setup.url, "not yours")
    setup.gateway.script = [Status(401)]
    with pytest.raises(HTTPStatusError) as refused:
        await follow(kind, setup.url, created)
    assert refused.value.status == 401
    assert [s.status for s in setup.gateway.events_requests()] == [404, 401]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_retries_are_bounded(setup: Setup, kind: Kind) -> None:
    created = await create(setup.url, "never reachable")
    setup.gateway.script = [Status(502)] * 10
    with pytest.raises(GaveUp):
        await follow(kind, setup.url, created, RetryPolicy(initial_delay=0.01, max_attempts=3))
    assert len(setup.gateway.events_requests()) == 3


async def test_a_given_events_url_is_followed_as_handed_over(setup: Setup) -> None:
    """A frontend gets one URL from its backend (a stream token in its query):
    the client follows it, resumes with it, and sends its query unchanged."""
    created = await create(setup.url, "handed over")
    handed_over = f"/v1/streams/{created.id}/events?token=opaque-capability"
    setup.gateway.script = [Cut(after_events=3)]
    transcript = await follow("async", setup.url, handed_over)
    assert transcript.text == expected("handed over")
    assert {s.query for s in setup.gateway.events_requests()} == {"token=opaque-capability"}


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_cancel_ends_the_stream_with_cancelled(slow_setup: Setup, kind: Kind) -> None:
    setup = slow_setup
    prompt = f"cancel me ({kind})"
    async with AsyncTokenwireClient(setup.url) as client:
        created = await client.create({"prompt": prompt})
        transcript = Transcript()
        async for event in client.iter_events(created, transcript):
            if event.type == "token" and transcript.text:
                break
        if kind == "async":
            assert await client.cancel(created) == "cancelling"
        else:
            def cancel() -> str:
                with TokenwireClient(setup.url) as blocking:
                    return blocking.cancel(created.id)
            assert await asyncio.to_thread(cancel) == "cancelling"
        await client.follow(created, transcript)
    assert transcript.terminal is not None
    assert transcript.terminal.data["finish_reason"] == "cancelled"
    assert expected(prompt).startswith(transcript.text) and transcript.text != expected(prompt)


async def test_204_settles_the_transcript_from_the_status(setup: Setup, redis: Redis) -> None:
    """A finished stream whose events expired answers 204: the text comes from
    its status, and the transcript ends as the stream did."""
    created = await create(setup.url, "expired events")
    first = await follow("async", setup.url, created)
    await redis.delete(keys.events(created.id))
    late = await follow("sync", setup.url, created)
    assert late.text == first.text == expected("expired events")
    assert late.terminal is not None and late.terminal.type == "done"
    assert late.terminal.data["sha256"] == first.terminal.data["sha256"]  # type: ignore[union-attr]
    assert setup.gateway.events_requests()[-1].status == 204
