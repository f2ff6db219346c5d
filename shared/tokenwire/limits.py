"""Per-API-key spend and abuse limits, enforced in Redis across every edge and worker.

Each check-and-count is one script over the keys of one API key (one hash
tag, so one Redis Cluster slot), so concurrent requests cannot overshoot:

- ``admit`` (edge, creating a stream): tokens in the current window
  (``tokens_per_minute``), creations in the last 60 s (``requests_per_minute``,
  a sliding log), unfinished streams (``max_running``, a sorted set scored by
  each slot's expiry: a slot leaked by a crash heals by itself; workers refresh
  the slots of streams they run and release them at the terminal event);
- ``spend`` (worker): tokens generated, queued with the append of the same
  text so that it shares its pipelined round trip — never a round trip of its own;
- ``connect`` (edge): open SSE/WebSocket connections on the key's streams,
  leased and refreshed by the edge that holds them.

Every refusal is ``OverLimit`` (429) with ``Retry-After`` and its own code.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from tokenwire import keys
from tokenwire.errors import OverLimit, Unauthorized
from tokenwire.jobs import Job
from tokenwire.pipelining import ScriptBatcher
from tokenwire.redis_client import RedisClient
from tokenwire.scriptfiles import load_script
from tokenwire.settings import Settings

log = logging.getLogger(__name__)

TOKEN_WINDOW_MS = 60_000

_MESSAGES = {
    "tokens_per_minute_exceeded": "this API key generated its tokens per minute; retry later",
    "requests_per_minute_exceeded": "this API key made its creations per minute; retry later",
    "max_running_exceeded": "this API key has its maximum of unfinished streams; retry later",
    "max_connections_exceeded": "this API key has its maximum of open connections",
}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _refusal(reply: list[Any]) -> OverLimit:
    code = str(reply[0])
    return OverLimit(code, _MESSAGES.get(code, "over a limit"), retry_after=int(reply[1]) / 1000)


class KeyLimiter:
    """``batcher``: share the caller's pipeline (a worker's appends), so that
    counting tokens costs no round trip of its own."""

    def __init__(self, redis: RedisClient, settings: Settings,
                 batcher: ScriptBatcher | None = None) -> None:
        self._redis = redis
        self._running_lease_ms = settings.running_lease_seconds * 1000
        self._connection_lease_ms = int(settings.connection_lease_seconds * 1000)
        self._admit = redis.register_script(load_script("admit", prelude=False))
        self._spend = redis.register_script(load_script("spend", prelude=False))
        self._connect = redis.register_script(load_script("connect", prelude=False))
        self._batcher = batcher or ScriptBatcher(redis)

    async def load_scripts(self) -> None:
        for script in (self._admit, self._spend, self._connect):
            await self._redis.script_load(script.script)

    # --- creating a stream (edge) -------------------------------------------------

    async def admit(self, job: Job) -> None:
        """Count ``job`` against its key's limits, or raise ``OverLimit``
        (``Unauthorized`` if the key was revoked meanwhile)."""
        if job.key_id is not None:
            await self._admit_member(job.key_id, job.stream_id, runs=True)

    async def admit_request(self, key_id: str | None, member: str) -> None:
        """Count one request that costs but runs nothing (a new conversation:
        Redis memory for a week) in the key's requests per minute, or raise
        ``OverLimit``. ``member``: unique to the request."""
        if key_id is not None:
            await self._admit_member(key_id, member, runs=False)

    async def _admit_member(self, key_id: str, member: str, *, runs: bool) -> None:
        reply = await self._admit(keys=keys.key_limit_keys(key_id),
                                  args=[_now_ms(), member, self._running_lease_ms,
                                        "1" if runs else "0"])
        if reply[0] == "revoked":
            raise Unauthorized("invalid_api_key", "the API key is not valid")
        if reply[0] != "ok":
            raise _refusal(reply)

    async def undo(self, job: Job) -> None:
        """Take back an admission whose stream could not be created."""
        if job.key_id is not None:
            async with self._redis.pipeline(transaction=True) as pipe:  # one slot
                pipe.zrem(keys.key_running(job.key_id), job.stream_id)
                pipe.zrem(keys.key_requests(job.key_id), job.stream_id)
                await pipe.execute()

    # --- running streams (worker, and the edge for a queued cancel) ---------------

    async def release(self, key_id: str | None, stream_id: str) -> None:
        """The stream ended: its running slot is free (idempotent)."""
        if key_id is not None:
            await self._redis.zrem(keys.key_running(key_id), stream_id)

    async def refresh_running(self, slots: Sequence[tuple[str, str]]) -> None:
        """Extend the slots ``(key id, stream id)`` of streams still running."""
        await self._extend(keys.key_running, slots, self._running_lease_ms)

    async def _extend(self, leases: Callable[[str], str], held: Sequence[tuple[str, str]],
                      lease_ms: int) -> None:
        """Push back the expiry of each ``(key id, member)`` still in its sorted
        set (a released one stays released), in one round trip."""
        if not held:
            return
        expires = _now_ms() + lease_ms
        async with self._redis.pipeline(transaction=False) as pipe:
            for key_id, member in held:
                pipe.zadd(leases(key_id), {member: expires}, xx=True)
                pipe.pexpire(leases(key_id), lease_ms)
            await pipe.execute()

    def spend(self, key_id: str, tokens: int) -> None:
        """Count generated tokens, in the batcher's next pipeline (call it just
        before the append of the same text). Best effort: a count lost with a
        failed round trip is logged, never retried (a retry could double it)."""
        if tokens <= 0:
            return
        reply = self._batcher.submit(self._spend, [keys.key_tokens(key_id)],
                                     [tokens, TOKEN_WINDOW_MS])
        reply.add_done_callback(_log_lost_spend)


    # --- delivery connections (edge) ----------------------------------------------

    async def open_connection(self, key_id: str) -> str | None:
        """Count one open connection on ``key_id``'s streams; returns its id (to
        refresh and close), None when the key has no connection limit."""
        connection_id = secrets.token_hex(8)
        reply = await self._connect(
            keys=[keys.api_key(key_id), keys.key_connections(key_id)],
            args=[_now_ms(), connection_id, self._connection_lease_ms])
        if reply[0] == "unlimited":
            return None
        if reply[0] != "ok":
            raise _refusal(reply)
        return connection_id

    async def refresh_connections(self, connections: Sequence[tuple[str, str]]) -> None:
        """Extend the leases ``(key id, connection id)`` of connections still open."""
        await self._extend(keys.key_connections, connections, self._connection_lease_ms)

    async def close_connection(self, key_id: str, connection_id: str) -> None:
        await self._redis.zrem(keys.key_connections(key_id), connection_id)


def _log_lost_spend(reply: asyncio.Future[Any]) -> None:
    if not reply.cancelled() and (exc := reply.exception()) is not None:
        log.warning("could not count tokens for an API key: %s", exc)
