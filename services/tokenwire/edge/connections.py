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
import logging
from types import TracebackType

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

    def held(self, key_id: str | None) -> Lease:
        """One connection on a stream created by ``key_id``, for the ``async
        with`` block; raises ``OverLimit`` (429) before it starts when the key
        has its maximum."""
        return Lease(self, key_id)

    async def _open(self, key_id: str | None) -> tuple[str, str] | None:
        record = await self._auth.key_record(key_id) if key_id is not None else None
        if key_id is None or record is None or record.max_connections is None:
            return None
        connection_id = await self._limiter.open_connection(key_id)
        if connection_id is None:
            return None
        lease = (key_id, connection_id)
        self._held.add(lease)
        return lease

    async def _close(self, lease: tuple[str, str]) -> None:
        self._held.discard(lease)
        try:
            await self._limiter.close_connection(*lease)
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


class Lease:
    """``ConnectionLeases.held``: a plain object, not a generator-based context
    manager — every SSE connection holds one for its whole life, and an async
    generator costs it ~0.5 KiB (its frame and the loop's weak reference)."""

    __slots__ = ("_key_id", "_lease", "_leases")

    def __init__(self, leases: ConnectionLeases, key_id: str | None) -> None:
        self._leases, self._key_id = leases, key_id
        self._lease: tuple[str, str] | None = None

    async def __aenter__(self) -> None:
        self._lease = await self._leases._open(self._key_id)

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if self._lease is not None:
            lease, self._lease = self._lease, None
            await self._leases._close(lease)
