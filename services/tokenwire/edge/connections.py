"""Open delivery connections, counted per API key across every edge.

A key with ``max_connections`` gets one leased entry per open SSE or
WebSocket connection on its streams (``limits.KeyLimiter.open_connection``).
This edge refreshes the leases of the connections it holds every third of a
lease and removes each when its connection ends; the entries of an edge that
died expire by themselves within one lease. Keys without that limit cost
nothing here: their record (cached) says so before any Redis call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from tokenwire.edge.auth import Authenticator
from tokenwire.limits import KeyLimiter
from tokenwire.redis_client import TRANSPORT_ERRORS
from tokenwire.supervision import Background

log = logging.getLogger(__name__)


class ConnectionLeases:
    def __init__(self, limiter: KeyLimiter, auth: Authenticator, lease_seconds: float) -> None:
        self._limiter = limiter
        self._auth = auth
        self._interval = lease_seconds / 3
        self._held: set[tuple[str, str]] = set()  # (key id, connection id)
        self._ticker = Background("conn-leases", self._refresh_every_interval)

    def start(self) -> None:
        self._ticker.start()

    async def close(self) -> None:
        await self._ticker.close()

    @contextlib.asynccontextmanager
    async def held(self, key_id: str | None) -> AsyncIterator[None]:
        """One connection on a stream created by ``key_id``, for the block;
        raises ``OverLimit`` (429) before it starts when the key has its maximum."""
        record = await self._auth.key_record(key_id) if key_id is not None else None
        if key_id is None or record is None or record.max_connections is None:
            yield
            return
        connection_id = await self._limiter.open_connection(key_id)
        if connection_id is None:
            yield
            return
        lease = (key_id, connection_id)
        self._held.add(lease)
        try:
            yield
        finally:
            self._held.discard(lease)
            try:
                await self._limiter.close_connection(key_id, connection_id)
            except (*TRANSPORT_ERRORS, RedisError) as exc:  # the lease expires by itself
                log.warning("could not release a connection slot: %s", exc)

    async def _refresh_every_interval(self) -> None:
        while self._ticker.running:
            await asyncio.sleep(self._interval)
            if not self._held:
                continue
            try:
                await self._limiter.refresh_connections(list(self._held))
            except (*TRANSPORT_ERRORS, RedisError) as exc:  # next tick tries again
                log.warning("could not refresh connection leases: %s", exc)
