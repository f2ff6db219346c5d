"""The Redis event sink: one generation attempt's writes, numbered and fenced."""

from __future__ import annotations

from typing import Any

from tokenwire.events import dumps
from tokenwire.store import Attempt, PendingEvent, StreamStore


class RedisEventSink:
    """Numbers events from 2 (``begin`` wrote ``start`` as 1) and appends them
    through the fenced append script. Retrying an append after a lost reply is
    safe: the script recognises an already-applied seq."""

    def __init__(self, store: StreamStore, attempt: Attempt) -> None:
        self._store = store
        self._attempt = attempt
        self._next_seq = 2

    async def token(self, content: str, count: int) -> bool:
        event = PendingEvent("token", dumps({"content": content}), content)
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
        cancel = await self._store.append(
            self._attempt, self._next_seq, batch, final_status, tokens_delta
        )
        self._next_seq += len(batch)
        return cancel
