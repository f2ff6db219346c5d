"""Who this edge delivers to: viewers per stream and per protocol, counted where
a handler hands a client its stream (``delivering``), and reported to Redis for
the operator's console — "viewers across edges".

Reporting costs Redis next to nothing while nobody looks: once a second (the
edge's Redis watch calls ``tick``) the edge asks whether a console is open
(``tw:console:open``, set by the admin API with a short expiry, one
``EXISTS``), and only then writes its census (one JSON value with an expiry of
a few seconds) and its heartbeat in ``tw:edges``.
Counting is local state changed without an ``await``, so a handler cancelled
anywhere leaves the counts right.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator

from tokenwire import keys
from tokenwire.redis_client import RedisClient

#: The delivery protocols, as the ``tokenwire_edge_viewers`` gauge labels them.
PROTOCOLS = ("sse", "ws", "chat_completions", "responses", "ui_chat", "conversation_ws")
#: Streams listed in one edge's report at most (the console shows a few hundred).
MAX_REPORTED = 20_000


class ViewerCensus:
    def __init__(self, redis: RedisClient, address: str, expiry_seconds: float = 5.0) -> None:
        self._redis = redis
        self.edge_id = keys.new_edge_id()
        self._address = address
        self._expiry_ms = int(expiry_seconds * 1000)
        self._started_at_ms = int(time.time() * 1000)
        self.viewers: Counter[str] = Counter()  # stream id -> local viewers
        self.by_protocol: Counter[str] = Counter()

    @contextlib.contextmanager
    def watching(self, stream_id: str, protocol: str) -> Iterator[None]:
        """One client receives ``stream_id`` over ``protocol`` for the block."""
        self.join(stream_id, protocol)
        try:
            yield
        finally:
            self.leave(stream_id, protocol)

    def join(self, stream_id: str, protocol: str) -> None:
        """One client receives ``stream_id`` over ``protocol`` until ``leave``
        (``watching``, without a generator per connection: see ``delivering``)."""
        self.viewers[stream_id] += 1
        self.by_protocol[protocol] += 1

    def leave(self, stream_id: str, protocol: str) -> None:
        self.by_protocol[protocol] -= 1
        self.viewers[stream_id] -= 1
        if self.viewers[stream_id] <= 0:
            del self.viewers[stream_id]

    def connections(self) -> int:
        return sum(self.by_protocol.values())

    async def tick(self) -> None:
        """Report if a console is open (raises the client's errors)."""
        if await self._redis.exists(keys.CONSOLE_OPEN):
            await self.report()

    async def report(self) -> None:
        now_ms = int(time.time() * 1000)
        census = {
            "edge": self.edge_id, "address": self._address, "at_ms": now_ms,
            "started_at_ms": self._started_at_ms, "connections": self.connections(),
            "by_protocol": {name: count for name, count in self.by_protocol.items() if count},
            "viewers": dict(self.viewers.most_common(MAX_REPORTED)),
        }
        await self._redis.set(keys.edge_report(self.edge_id), json.dumps(census),
                              px=self._expiry_ms)
        await self._redis.zadd(keys.EDGES, {self.edge_id: now_ms})
