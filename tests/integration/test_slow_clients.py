"""Slow and hostile clients against a real edge over real sockets: request heads
and bodies that dribble in are cut off, JSON nested too deep is a 400, and
neither a slow SSE response nor an idle keep-alive connection is cut by the
head timer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.support.jobs import queued_jobs
from tests.support.processes import free_port
from tokenwire.edge.app import create_app
from tokenwire.edge.server import EdgeRunner

HEAD_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5
Address = tuple[str, int]


@pytest.fixture
async def edge(redis: Redis, redis_url: str) -> AsyncIterator[Address]:
    settings = make_settings(redis_url, request_head_timeout_seconds=HEAD_TIMEOUT,
                             request_body_timeout_seconds=BODY_TIMEOUT)
    runner = EdgeRunner(create_app(settings), settings, handler_cancellation=True,
                        shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield "127.0.0.1", port
    finally:
        await runner.cleanup()


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sent until it closed the connection (fails past ``within``)."""
    async with asyncio.timeout(within):
        received = b""
        try:
            while chunk := await reader.read(4096):
                received += chunk
        except ConnectionResetError:
            pass
        return received


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, Any]]:
    """One HTTP/1.1 response with a JSON body: its head and the decoded body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0])
    return head, json.loads(await reader.readexactly(length))


async def dribble(writer: asyncio.StreamWriter, data: bytes, interval: float) -> None:
    """Send ``data`` one byte per ``interval`` until the server hangs up."""
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(interval)
    except ConnectionError:
        return


async def test_request_heads_that_dribble_in_are_cut_off(edge: Address) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    connections = [await asyncio.open_connection(*edge) for _ in range(50)]
    senders = [asyncio.create_task(dribble(writer, head, 0.05)) for _, writer in connections]
    try:
        # 200+ bytes at 20 bytes/s would take over 10 s; the head timer ends each
        # connection after 0.5 s, with nothing sent back
        results = await asyncio.gather(*(closed_by_server(reader, HEAD_TIMEOUT + 4)
                                         for reader, _ in connections))
        assert results == [b""] * len(connections)
    finally:
        for sender in senders:
            sender.cancel()
        for _, writer in connections:
            writer.close()


async def test_a_body_that_dribbles_in_gets_408(edge: Address, redis: Redis) -> None:
    reader, writer = await asyncio.open_connection(*edge)
    body = json.dumps({"prompt": "slow"}).encode() + b" " * 200
    writer.write(b"POST /v1/streams HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    sender = asyncio.create_task(dribble(writer, body, 0.05))
    try:  # 200+ bytes at 20 bytes/s would take over 10 s
        async with asyncio.timeout(BODY_TIMEOUT + 4):
            head, answer = await read_response(reader)
    finally:
        sender.cancel()
        writer.close()
    assert head.startswith(b"HTTP/1.1 408 Request Timeout")
    assert answer["error"]["code"] == "request_timeout"
    assert await queued_jobs(redis) == 0  # nothing was enqueued


async def test_idle_keepalive_connections_and_long_responses_are_not_cut(
        edge: Address) -> None:
    reader, writer = await asyncio.open_connection(*edge)
    try:
        writer.write(b"POST /v1/streams HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 17\r\n\r\n{\"prompt\": \"hi\"}\n")
        head, created = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 202")
        stream_id = created["id"]
        await asyncio.sleep(HEAD_TIMEOUT * 2)  # idle, no bytes: the keep-alive timeout applies
        # no worker: the stream stays queued and its SSE response stays open
        writer.write(f"GET /v1/streams/{stream_id}/events HTTP/1.1\r\nHost: edge\r\n\r\n"
                     .encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        with pytest.raises(TimeoutError):  # still open well past the head timeout
            async with asyncio.timeout(HEAD_TIMEOUT * 3):
                while await reader.read(4096):
                    pass
    finally:
        writer.close()


@pytest.mark.parametrize("depth", [40, 5_000, 100_000])
async def test_json_nested_too_deep_is_a_400(edge: Address, redis: Redis, depth: int) -> None:
    body = ('{"prompt": "x", "metadata": {"a": ' + "[" * depth + "]" * depth + "}}").encode()
    reader, writer = await asyncio.open_connection(*edge)
    try:
        writer.write(b"POST /v1/streams HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json"
                     b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        head, answer = await read_response(reader)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 400"), head
    assert answer["error"]["code"] == "malformed_json"
    assert "nested deeper than 32" in answer["error"]["message"]
    assert await queued_jobs(redis) == 0
