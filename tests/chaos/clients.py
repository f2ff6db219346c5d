"""Chaos clients: follow a stream over SSE until its terminal event, through
drops, dead edges and outages, resuming with ``Last-Event-ID`` on whichever
edge answers — and record every event for the checker."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp

from tests.chaos.checker import ClientRecord
from tokenwire.client import parse_sse


async def follow(
    session: aiohttp.ClientSession, edges: list[str], record: ClientRecord, *,
    drop_probability: float = 0.0, deadline: float = 60.0, first_edge: int = 0,
) -> ClientRecord:
    """Follow ``record.stream_id`` until a terminal event (or a 204/404/410, or the
    deadline). With ``drop_probability`` the client hangs up after an event at
    random and resumes on another edge."""
    give_up_at = time.monotonic() + deadline
    edge = first_edge
    while record.terminal is None and time.monotonic() < give_up_at:
        url = f"{edges[edge % len(edges)]}/v1/streams/{record.stream_id}/events"
        edge += 1
        cursor = record.last_id or record.initial_cursor
        headers = {"Last-Event-ID": cursor} if cursor else {}
        try:
            async with session.get(url, headers=headers,
                                   timeout=aiohttp.ClientTimeout(sock_read=20)) as response:
                record.connect(response.status)
                if response.status in (204, 404, 410):
                    return record
                if response.status != 200:
                    await asyncio.sleep(0.3)
                    continue
                async for event_id, event_type, data in parse_sse(response.content):
                    record.receive(event_id, event_type, data)
                    if event_type in ("done", "error") and event_id is not None:
                        return record
                    if event_type == "reconnect":  # the response ends: come back later
                        await asyncio.sleep(0.2)
                        break
                    if random.random() < drop_probability:
                        break
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            await asyncio.sleep(0.2)
    return record
