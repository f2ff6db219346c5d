"""The worker's one pub/sub connection: cancels (``tw:cancel``, published by any
edge) and job wake-ups (``tw:jobs:wake``, published by the enqueue script).

Both are broadcasts, plain ``PUBLISH``: in a cluster every node relays them, so
the worker listens on any one node — another after a failure, from a fresh
slot map. Neither is the only path: a cancel also reaches the generation with
its next append's reply, and a missed wake-up with the next sweep of the job
partitions; after a reconnect the worker sweeps at once (``on_connected``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable

from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from tokenwire import keys
from tokenwire.redis_client import TRANSPORT_ERRORS, RedisClient, node_client
from tokenwire.supervision import Background

log = logging.getLogger(__name__)

RECONNECT_DELAY = 0.5


class Broadcasts:
    def __init__(self, redis: RedisClient, on_cancel: Callable[[str], None],
                 on_wake: Callable[[str], None], on_connected: Callable[[], None]) -> None:
        self._redis = redis
        self._handlers = {keys.CANCEL_CHANNEL: on_cancel, keys.JOBS_WAKE_CHANNEL: on_wake}
        self._on_connected = on_connected
        self._listener = Background("broadcast-listener", self._run)

    def start(self) -> None:
        self._listener.start()

    async def close(self) -> None:
        await self._listener.close()

    async def _run(self) -> None:
        failures = 0
        while self._listener.running:
            try:
                async with self._subscribed() as pubsub:
                    if failures:
                        log.info("broadcast listener reconnected")
                    failures = 0
                    self._on_connected()
                    while self._listener.running:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None:
                            self._handlers[str(message["channel"])](str(message["data"]))
            except TRANSPORT_ERRORS as exc:
                if failures == 0:
                    log.warning("broadcast listener reconnecting: %s", exc)
                failures += 1
                await asyncio.sleep(RECONNECT_DELAY * random.uniform(0.5, 1.5))

    @contextlib.asynccontextmanager
    async def _subscribed(self) -> AsyncIterator[PubSub]:
        if isinstance(self._redis, RedisCluster):
            # Any node relays broadcasts; a fresh slot map leaves out a dead one.
            await self._redis.nodes_manager.initialize()
            node = random.choice(self._redis.get_nodes())
            client = node_client(self._redis, node)
        else:
            client = self._redis
        try:
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(*self._handlers)
                yield pubsub
        finally:
            if client is not self._redis:
                await client.aclose()
