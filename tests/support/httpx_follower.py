"""Following a stream the way a Python user of httpx-sse would: ``aconnect_sse``
and ``aiter_sse``, ``json.loads`` of each message, and — since httpx-sse does
not reconnect by itself — a loop that resumes with ``Last-Event-ID`` after the
response ends early or the connection drops, waiting what ``retry:`` said."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
from httpx_sse import SSEError, aconnect_sse

from tests.chaos.checker import ClientRecord


async def follow_with_httpx_sse(bases: list[str], record: ClientRecord, *,
                                deadline: float = 60.0, drop_probability: float = 0.0,
                                first: int = 0, credentials: str | None = None
                                ) -> ClientRecord:
    """Follow ``record.stream_id`` to its terminal event (or a final status),
    trying ``bases`` in turn; every message goes into ``record``. ``credentials``:
    an API key or stream token, sent as ``Authorization: Bearer``."""
    give_up_at = time.monotonic() + deadline
    attempt = first
    retry_ms = 1000
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=30.0)) as client:
        while record.terminal is None and time.monotonic() < give_up_at:
            url = f"{bases[attempt % len(bases)]}/v1/streams/{record.stream_id}/events"
            attempt += 1
            cursor = record.last_id or record.initial_cursor
            headers = {"Last-Event-ID": cursor} if cursor else {}
            if credentials is not None:
                headers["Authorization"] = f"Bearer {credentials}"
            try:
                async with aconnect_sse(client, "GET", url, headers=headers) as source:
                    status = source.response.status_code
                    record.connect(status)
                    if status in (204, 404, 410):
                        return record
                    async for sse in source.aiter_sse():
                        json.loads(sse.data)  # every message is JSON, notices included
                        # httpx-sse repeats the last id on a message without one.
                        own_id = None if sse.event == "reconnect" else sse.id
                        record.receive(own_id, sse.event, sse.data)
                        retry_ms = sse.retry or retry_ms
                        if record.terminal is not None:
                            return record
                        if random.random() < drop_probability:
                            break
            except (httpx.HTTPError, SSEError):
                pass  # a dropped connection: resume
            await asyncio.sleep(retry_ms / 1000)
    return record
