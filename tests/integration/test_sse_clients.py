"""The native SSE endpoints read by the SSE clients people use, the way their
READMEs show, with a naive ``json.loads`` of every message's data:

- httpx-sse (``aconnect_sse`` / ``aiter_sse``),
- sseclient-py (``sseclient.SSEClient`` over a streamed response),
- the ``openai`` SDK's own decoder (``openai._streaming.SSEDecoder``), which
  its ``Stream`` feeds to ``json.loads`` as well.

Each reads a whole stream, then a stream resumed with ``Last-Event-ID``,
with heartbeats arriving between events, and the edge's transient answer (a
``reconnect`` notice) when Redis is down. A client that yielded an empty
message (a ``retry:``-only block, a ping after an ``id:``) would fail here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import sseclient
from httpx_sse import aconnect_sse
from openai._streaming import SSEDecoder
from redis.asyncio import Redis

from tests.conftest import make_settings, running_worker
from tests.integration.edge_support import EdgeClient
from tests.integration.test_edge_api import expected_text
from tests.support.processes import free_port
from tokenwire.edge.app import create_app

ClientFactory = Callable[..., Any]
#: (event type, data, id) as a client library hands them to its user.
Message = tuple[str, str, str]


async def read_httpx_sse(url: str, headers: dict[str, str]) -> list[Message]:
    async with httpx.AsyncClient(timeout=30) as client, \
            aconnect_sse(client, "GET", url, headers=headers) as source:
        return [(sse.event, sse.data, sse.id or "") async for sse in source.aiter_sse()]


async def read_sseclient_py(url: str, headers: dict[str, str]) -> list[Message]:
    def read() -> list[Message]:
        with httpx.Client(timeout=30) as client, \
                client.stream("GET", url, headers=headers) as response:
            events = sseclient.SSEClient(response.iter_bytes()).events()
            return [(event.event, event.data, event.id or "") for event in events]

    return await asyncio.to_thread(read)


async def read_openai_decoder(url: str, headers: dict[str, str]) -> list[Message]:
    async with httpx.AsyncClient(timeout=30) as client, \
            client.stream("GET", url, headers=headers) as response:
        decoder = SSEDecoder()
        return [(sse.event or "message", sse.data, sse.id or "")
                async for sse in decoder.aiter_bytes(response.aiter_bytes())]


READERS = {"httpx-sse": read_httpx_sse, "sseclient-py": read_sseclient_py,
           "openai-decoder": read_openai_decoder}


def decoded(messages: list[Message]) -> Iterator[tuple[str, dict[str, Any], str]]:
    for event_type, data, event_id in messages:
        yield event_type, json.loads(data), event_id  # json.loads: what every user does


def text_of(events: list[tuple[str, dict[str, Any], str]]) -> str:
    return "".join(data["content"] for event_type, data, _ in events if event_type == "token")


@pytest.fixture
async def edge(redis: Redis, redis_url: str, aiohttp_client: ClientFactory
               ) -> AsyncIterator[EdgeClient]:
    # 200 tokens/s: ~0.6 s a stream; heartbeats every 20 ms land between events.
    settings = make_settings(redis_url, simulated_tokens_per_second=200.0,
                             default_buffer="none", sse_ping_seconds=0.02)
    async with running_worker(redis, settings):
        yield await aiohttp_client(create_app(settings))


async def new_stream(edge: EdgeClient, prompt: str) -> str:
    response = await edge.post("/v1/streams", json={"prompt": prompt})
    return str((await response.json())["id"])


@pytest.mark.parametrize("library", READERS)
async def test_a_whole_stream_and_a_resumed_one(edge: EdgeClient, library: str) -> None:
    read = READERS[library]
    prompt = f"read by {library}"
    url = str(edge.make_url(f"/v1/streams/{await new_stream(edge, prompt)}/events"))
    whole = list(decoded(await read(url, {})))
    types = [event_type for event_type, _, _ in whole]
    assert types[0] == "start" and types[-1] == "done"
    assert set(types) == {"start", "token", "done"}, "a message that is not an event"
    assert text_of(whole) == expected_text(prompt)

    # Resume from the middle, with the id the library reported for that message.
    middle = len(whole) // 2
    cursor = whole[middle][2]
    rest = list(decoded(await read(url, {"Last-Event-ID": cursor})))
    assert [event_type for event_type, _, _ in rest][-1:] == ["done"]
    assert text_of(whole[:middle + 1]) + text_of(rest) == expected_text(prompt)
    assert "start" not in {event_type for event_type, _, _ in rest}


@pytest.mark.parametrize("library", READERS)
async def test_redis_down_is_a_reconnect_notice_every_client_parses(
    redis_url: str, aiohttp_client: ClientFactory, library: str
) -> None:
    """No Redis behind the edge: the events route answers 200 with one
    ``reconnect`` message (JSON data, no id) and a ``retry:``, not a 503."""
    nowhere = make_settings(f"redis://127.0.0.1:{free_port()}/0", redis_socket_timeout=1.0,
                            read_block_ms=500)
    edge: EdgeClient = await aiohttp_client(create_app(nowhere))
    url = str(edge.make_url("/v1/streams/" + "A" * 22 + "/events"))
    messages = list(decoded(await READERS[library](url, {"Last-Event-ID": "abc.3"})))
    assert [event_type for event_type, _, _ in messages] == ["reconnect"]
    assert messages[0][1]["reason"] == "redis_unavailable"
