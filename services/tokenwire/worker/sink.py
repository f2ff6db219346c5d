"""The Redis event sink: one generation attempt's writes, numbered and fenced."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import OutOfMemoryError

from tokenwire.errors import OutOfCapacity
from tokenwire.events import dumps
from tokenwire.store import Appended, Attempt, PendingEvent, StreamStore
from tokenwire.worker.retrying import until_redis_answers

#: A write is retried at least this long, even one made at the job's deadline
#: (the terminal ``error`` of a generation that ran out of time).
MIN_RETRY_SECONDS = 30.0


class RedisEventSink:
    """Numbers events after the attempt's ``last_seq`` and appends them through
    the fenced append script.

    A write that fails in transit is retried until Redis answers, up to the
    job's ``deadline`` (``time.monotonic()``; see ``retrying``): the script
    recognises a batch it already applied, so a lost reply never duplicates an
    event. While a write waits, the generation waits with it (and its read of
    the model stops once a few hundred deltas are queued: memory stays
    bounded). Past the deadline the transport error propagates.
    A token write refused because Redis is out of memory raises ``OutOfCapacity``.
    ``spend``: counts the tokens against the job's API key; called just before
    their append, so the count shares the append's pipelined round trip.
    ``on_tokens(count, appended)``: told of each token write (the worker's
    metrics); ``on_retry``: of each write retried after a transport error.
    """

    def __init__(self, store: StreamStore, attempt: Attempt, deadline: float,
                 spend: Callable[[int], None] | None = None, *,
                 on_tokens: Callable[[int, Appended], None] | None = None,
                 on_retry: Callable[[str], None] | None = None) -> None:
        self._store = store
        self._attempt = attempt
        self._next_seq = attempt.last_seq + 1
        self._deadline = deadline
        self._context = {"stream_id": attempt.stream_id}
        self._spend = spend
        self._on_tokens = on_tokens
        self._on_retry = on_retry
        #: the last write's reply (for the policy's "nobody watched" verdict)
        self.last_appended: Appended | None = None

    async def token(self, content: str, count: int) -> bool:
        event = PendingEvent("token", dumps({"content": content}), content)
        if self._spend is not None:
            self._spend(count)
        appended = await self._write([event], tokens_delta=count)
        if self._on_tokens is not None:
            self._on_tokens(count, appended)
        return appended.cancel_requested

    async def done(self, data: dict[str, Any]) -> None:
        status = "cancelled" if data["finish_reason"] == "cancelled" else "done"
        await self._write([PendingEvent("done", dumps(data))], final_status=status)

    async def error(self, code: str, message: str, retryable: bool) -> None:
        data = dumps({"code": code, "message": message, "retryable": retryable})
        await self._write([PendingEvent("error", data)], final_status="error")

    async def _write(
        self, batch: list[PendingEvent], final_status: str = "", tokens_delta: int = 0
    ) -> Appended:
        give_up_at = max(self._deadline, time.monotonic() + MIN_RETRY_SECONDS)
        first_seq = self._next_seq
        try:
            appended = await until_redis_answers(
                lambda: self._store.append(self._attempt, first_seq, batch, final_status,
                                           tokens_delta),
                give_up_at, "append", self._context, self._on_retry)
        except OutOfMemoryError as exc:  # Redis hit maxmemory: this stream cannot go on
            raise OutOfCapacity() from exc
        self._next_seq += len(batch)
        self.last_appended = appended
        return appended
