"""One Redis client per process, on a bounded pool (connections stay constant as load grows)."""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from tokenwire.settings import Settings

#: Transport errors: the only ones worth a retry, or a 503.
TRANSPORT_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)


def create_redis(
    settings: Settings, client_name: str | None = None, max_connections: int | None = None
) -> Redis:
    """``client_name`` labels the connections in ``CLIENT LIST`` (e.g. ``tw-edge``).
    The pool blocks when all its connections are busy: a process never holds more."""
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections or settings.redis_max_connections,
        timeout=settings.redis_socket_timeout,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=min(5.0, settings.redis_socket_timeout),
        health_check_interval=30,
        decode_responses=True,
        client_name=client_name,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    pool.connection_class = _packing_with_hiredis(pool.connection_class)
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


class _HiredisPacking:
    """Packs commands with hiredis' C packer. redis.asyncio packs in Python
    (its sync client already uses hiredis): 15 µs against 1.4 µs for one append,
    a quarter of the bench producer's CPU at 10k appends/s."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):  # "CONFIG GET" → "CONFIG", "GET", as redis-py does
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # not str/bytes/int/float: let redis-py raise its DataError
            packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
            return packed


def _packing_with_hiredis(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """``base`` (TCP, TLS or Unix socket, as the URL chose) with hiredis packing."""
    return type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
