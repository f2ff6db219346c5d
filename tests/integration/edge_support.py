"""Helpers for edge tests: read SSE from an aiohttp test client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tokenwire.client import ClientEvent, Transcript, parse_sse

#: aiohttp's test client of an edge app.
EdgeClient = TestClient[web.Request, web.Application]


async def read_events(client: EdgeClient, stream_id: str, headers: dict[str, str] | None = None,
                      params: dict[str, str] | None = None, limit: int | None = None
                      ) -> list[ClientEvent]:
    """Open the SSE stream, read up to ``limit`` events (all, by default), close."""
    events: list[ClientEvent] = []
    response = await client.get(f"/v1/streams/{stream_id}/events", headers=headers or {},
                                params=params or {})
    assert response.status == 200, await response.text()
    async for event_id, event_type, data in parse_sse(response.content):
        events.append(ClientEvent(event_id or "", event_type, json.loads(data)))
        if limit is not None and len(events) >= limit:
            break
    response.close()
    return events


def assemble(*batches: list[ClientEvent]) -> Transcript:
    transcript = Transcript()
    for batch in batches:
        for event in batch:
            transcript.apply(event)
    return transcript


async def create(client: EdgeClient, body: dict[str, Any] | None = None) -> str:
    response = await client.post("/v1/streams", json=body or {"prompt": "hello edge"})
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


@asynccontextmanager
async def websocket(client: EdgeClient, stream_id: str, last_event_id: str | None = None
                    ) -> AsyncIterator[Any]:
    params = {"last_event_id": last_event_id} if last_event_id else {}
    ws = await client.ws_connect(f"/v1/streams/{stream_id}/ws", params=params)
    try:
        yield ws
    finally:
        await ws.close()
