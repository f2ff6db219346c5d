"""The Redis event sink: one generation attempt's writes, numbered and fenced."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import OutOfMemoryError

from tokenwire.errors import OutOfCapacity
from tokenwire.events import dumps
from tokenwire.redis_client import TRANSPORT_ERRORS
from tokenwire.store import Attempt, PendingEvent, StreamStore

log = logging.getLogger(__name__)


class RedisEventSink:
    """Numbers events after the attempt's ``last_seq`` and appends them through
    the fenced append script.

    A write that fails in transit is retried (with backoff, for up to
    ``retry_seconds``): the script recognises a batch it already applied, so a
    lost reply never duplicates an event. Past that budget the transport error
    propagates and the attempt is abandoned, to be reclaimed later.
    A token write refused because Redis is out of memory raises ``OutOfCapacity``.
    ``spend``: counts the tokens against the job's API key; called just before
    their append, so the count shares the append's pipelined round trip.
    """

    def __init__(self, store: StreamStore, attempt: Attempt, retry_seconds: float,
                 spend: Callable[[int], None] | None = None) -> None:
        self._store = store
        self._attempt = attempt
        self._next_seq = attempt.last_seq + 1
        self._retry_seconds = retry_seconds
        self._spend = spend

    async def token(self, content: str, count: int) -> bool:
        event = PendingEvent("token", dumps({"content": content}), content)
        if self._spend is not None:
            self._spend(count)
        return await self._write([event], tokens_delta=count)

    async def done(self, data: dict[str, Any]) -> None:
        status = "cancelled" if data["finish_reason"] == "cancelled" else "done"
        await self._write([PendingEvent("done", dumps(data))], final_status=status)

    async def error(self, code: str, message: str, retryable: bool) -> None:
        data = dumps({"code": code, "message": message, "retryable": retryable})
        await self._write([PendingEvent("error", data)], final_status="error")

    async def _write(
        self, batch: list[PendingEvent], final_status: str = "", tokens_delta: int = 0
    ) -> bool:
        give_up_at = time.monotonic() + self._retry_seconds
        delay = 0.05
        while True:
            try:
                cancel = await self._store.append(
                    self._attempt, self._next_seq, batch, final_status, tokens_delta
                )
                break
            except OutOfMemoryError as exc:  # Redis hit maxmemory: this stream cannot go on
                raise OutOfCapacity() from exc
            except TRANSPORT_ERRORS as exc:
                if time.monotonic() + delay > give_up_at:
                    raise
                log.warning("append failed, retrying in %.2fs: %s", delay, exc,
                            extra={"stream_id": self._attempt.stream_id})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self._next_seq += len(batch)
        return cancel
