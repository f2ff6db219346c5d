"""One Redis client per process, on a bounded pool (connections stay constant as load grows),
in the mode the settings name (``redis_mode``):

- ``standalone``: ``redis_url`` names the server; one blocking pool of
  ``max_connections``.
- ``sentinel``: ``redis_url`` names the sentinels (``redis://h1:26379,h2:26379``);
  the pool follows the master ``redis_sentinel_master`` through failovers.
- ``cluster``: ``redis_url`` names any node of a Valkey/Redis Cluster; at most
  ``max_connections`` connections per node, and at most ``max_connections``
  commands in flight (callers wait for a turn rather than fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import hiredis
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AskError,
    ClusterError,
    MovedError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from tokenwire.settings import Settings

#: What every module holds: a client of any mode (they share the command API).
RedisClient: TypeAlias = Redis | RedisCluster

#: Transport errors: the only ones worth a retry, or a 503. In a cluster also a
#: slot without a master for a moment (``CLUSTERDOWN``, ``TRYAGAIN``, a slot the
#: client's map does not cover), and a redirection redis-py did not follow (a
#: transaction answered ``MOVED`` after a failover: it did not run): a failover
#: or a migration in progress.
TRANSPORT_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError,
                    ClusterError, TryAgainError, SlotNotCoveredError, AskError)


def create_redis(
    settings: Settings, client_name: str | None = None, max_connections: int | None = None
) -> RedisClient:
    """``client_name`` labels the connections in ``CLIENT LIST`` (e.g. ``tw-edge``).
    A process never holds more than ``max_connections`` (per node in a cluster):
    callers wait for one when all are busy."""
    size = max_connections or settings.redis_max_connections
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": min(5.0, settings.redis_socket_timeout),
        "health_check_interval": 30,
        "decode_responses": True,
        "client_name": client_name,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
    }
    if settings.redis_mode == "cluster":
        return BoundedRedisCluster.from_url(settings.redis_url, max_connections=size,
                                            require_full_coverage=False, **options)
    options["retry_on_error"] = [RedisConnectionError, RedisTimeoutError]
    if settings.redis_mode == "sentinel":
        return _sentinel_master(settings, size, options)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=size, timeout=settings.redis_socket_timeout,
        **options)
    pool.connection_class = _packing_with_hiredis(pool.connection_class)
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


# --- sentinel ------------------------------------------------------------------------


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The master's pool, asked of the sentinels, that waits for a free
    connection (as the standalone pool does) instead of failing.

    redis-py's Sentinel pool finds the master when it opens a connection, and
    learns of a failover only from a write refused with ``READONLY``: a
    connection to the old master, now a replica, goes on answering reads —
    from a dataset it may be resyncing (a stream read as missing). So at most
    every ``MASTER_CHECK_SECONDS`` a connection handed out asks the sentinels
    which server is the master, and one to another server is closed first
    (it reconnects to the master on use)."""

    MASTER_CHECK_SECONDS = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._master_checked_at = 0.0

    async def aclose(self) -> None:
        """The pool, and the connections to the sentinels it asked."""
        await super().aclose()
        for sentinel in self.sentinel_manager.sentinels:
            await sentinel.aclose()

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        now = time.monotonic()
        if now - self._master_checked_at >= self.MASTER_CHECK_SECONDS:
            self._master_checked_at = now
            with contextlib.suppress(RedisError):  # sentinels away: keep what we have
                await self.get_master_address()  # type: ignore[no-untyped-call]
        connection: AbstractConnection = await super().get_connection(  # type: ignore[no-untyped-call]
            *args, **kwargs)
        master = self.master_address  # it closed the idle connections if the master moved
        if master is not None and connection.is_connected \
                and (connection.host, getattr(connection, "port", None)) != tuple(master):
            await connection.disconnect()
        return connection


def sentinel_addresses(url: str) -> list[tuple[str, int]]:
    """``redis://h1:26379,h2:26379/0`` → the sentinels' addresses."""
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    addresses = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "26379")
        addresses.append((name, int(port)))
    return addresses


def _sentinel_master(settings: Settings, size: int, options: dict[str, Any]) -> Redis:
    parts = urlsplit(settings.redis_url)
    credentials = {"username": parts.username or None, "password": parts.password or None}
    db = int(parts.path.strip("/") or 0)
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        sentinel_addresses(settings.redis_url),
        sentinel_kwargs={"socket_timeout": options["socket_timeout"],
                         "socket_connect_timeout": options["socket_connect_timeout"]})
    pool_options: dict[str, Any] = {**options, **credentials}
    client: Redis = sentinels.master_for(
        settings.redis_sentinel_master, connection_pool_class=BlockingSentinelPool,
        max_connections=size, timeout=settings.redis_socket_timeout, db=db, **pool_options)
    return client


# --- cluster -------------------------------------------------------------------------

#: Set while a task holds one of its client's turns: what it runs inside (a
#: pipeline's redirected commands, the nodes of one command) takes no other.
_HOLDING_TURN: ContextVar[bool] = ContextVar("tokenwire_holding_turn", default=False)


class BoundedRedisCluster(RedisCluster):
    """redis-py's cluster client raises ``MaxConnectionsError`` when a node's
    connections are all busy; this one makes callers wait instead, as the
    standalone pool does. Each operation — a command, a pipeline, a batch of
    scripts sent to one node — takes one turn of ``max_connections`` and uses at
    most one connection per node, so no node ever needs more."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(int(kwargs.get("max_connections", 100)))

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one of the client's turns (re-entrant within a task)."""
        if _HOLDING_TURN.get():
            yield
            return
        async with self._turns:
            token = _HOLDING_TURN.set(True)
            try:
                yield
            finally:
                _HOLDING_TURN.reset(token)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turn():
            # redis-py finds a command's slot before it initializes the client: a
            # first command it has no flags for (SPUBLISH) would fail.
            await self.initialize()
            try:
                return await super().execute_command(*args, **kwargs)
            except (RedisConnectionError, RedisTimeoutError):
                await self.after_failure()
                raise

    async def after_failure(self) -> None:
        """A command failed on a transport error: its node may be dead. redis-py
        does not always recover by itself: it asks its default node for the keys
        of some commands (``XREADGROUP``: ``COMMAND GETKEYS``) before its retry
        loop, and its transactions refresh the slot map only every fifth
        failure — with that master dead, they failed until the process
        restarted. So: another default node, and a fresh slot map (a new master
        once the failover is done)."""
        self.replace_default_node()
        self.commands_parser.node = self.get_default_node()
        with contextlib.suppress(RedisError, RedisClusterException):
            await self.nodes_manager.initialize()

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None
                 ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises redis-py's error
        # mypy takes a typing-only attribute of redis-py's for an abstract one
        return _BoundedPipeline(self, transaction)  # type: ignore[abstract]


class _BoundedPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True
                      ) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, BoundedRedisCluster)
        async with client.turn():
            try:
                return await super().execute(raise_on_error, allow_redirections)
            except (RedisConnectionError, RedisTimeoutError):
                await client.after_failure()
                raise
            except MovedError as exc:
                # A transaction does not follow MOVED (it ran nothing): point the
                # slot at its new master for the caller's retry.
                await client.nodes_manager.move_slot(exc)
                raise


def node_client(cluster: RedisCluster, node: ClusterNode, max_connections: int = 1) -> Redis:
    """A standalone client of one node of ``cluster`` (its address, credentials
    and timeouts), outside the cluster's pools: for a pub/sub connection that
    must not take one of the cluster client's turns."""
    pool = ConnectionPool(connection_class=node.connection_class,
                          max_connections=max_connections, **node.connection_kwargs)
    return Redis.from_pool(pool)


# --- hiredis packing -----------------------------------------------------------------


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
