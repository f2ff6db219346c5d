"""Which streams this edge is delivering to someone, reported to Redis.

A job may say ``on_disconnect: cancel_after=<seconds>``: nobody watched it for
that long, on any edge, so stop paying for its tokens. Every edge records
``seen_at`` on the meta hash of such streams while it has at least one client
on them (at once when the first arrives, then every ``interval`` — or a third
of the shortest ``cancel_after`` watched, so a watched stream is never taken
for abandoned between two reports); the append script compares ``seen_at``
with the clock and flags the cancel. A disconnect alone never cancels
anything. Only streams with that policy are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from tokenwire.redis_client import TRANSPORT_ERRORS
from tokenwire.store import StreamStore
from tokenwire.supervision import Background

log = logging.getLogger(__name__)


class ViewerReporter:
    def __init__(self, store: StreamStore, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._viewers: Counter[str] = Counter()
        self._cancel_after: dict[str, float] = {}  # seconds, per watched stream
        self._new_stream = asyncio.Event()  # the ticker may need a shorter period
        self._ticker = Background("viewers", self._report_every_interval)

    def start(self) -> None:
        self._ticker.start()

    async def close(self) -> None:
        await self._ticker.close()

    @contextlib.asynccontextmanager
    async def watching(self, stream_id: str, cancel_after: float) -> AsyncIterator[None]:
        """A client is receiving ``stream_id`` (whose job cancels it after
        ``cancel_after`` seconds unwatched) for the duration of the block."""
        self._viewers[stream_id] += 1
        self._cancel_after[stream_id] = cancel_after
        if self._viewers[stream_id] == 1:
            self._new_stream.set()
            await self._report([stream_id])
        try:
            yield
        finally:
            self._viewers[stream_id] -= 1
            if self._viewers[stream_id] <= 0:
                del self._viewers[stream_id]
                del self._cancel_after[stream_id]

    async def _report_every_interval(self) -> None:
        while self._ticker.running:
            shortest = min(self._cancel_after.values(), default=self._interval * 3)
            period = max(0.05, min(self._interval, shortest / 3))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._new_stream.wait()
            self._new_stream.clear()
            if self._viewers:
                await self._report(list(self._viewers))

    async def _report(self, stream_ids: list[str]) -> None:
        try:
            await self._store.touch(stream_ids)
        except (*TRANSPORT_ERRORS, RedisError) as exc:  # next tick tries again
            log.warning("could not report viewers: %s", exc)
