"""One generation: provider deltas → token buffer → event sink.

Knows neither Redis nor HTTP: the provider and the sink are protocols. The
upstream is read by its own task into a queue, so the buffer's flush deadline
can be honoured while the model is silent, and a cancel closes the upstream
call at once instead of at the next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenwire.buffers import TokenBuffer
from tokenwire.jobs import Job
from tokenwire.worker.providers import Delta, Provider, UpstreamError

log = logging.getLogger(__name__)


class EventSink(Protocol):
    async def token(self, content: str, count: int) -> bool:
        """Write one ``token`` event carrying ``count`` model tokens; returns
        whether a cancel was requested meanwhile."""
        ...

    async def done(self, data: dict[str, Any]) -> None: ...

    async def error(self, code: str, message: str, retryable: bool) -> None: ...


class _End:
    """Queue marker: the upstream finished (``error`` set if it failed)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class _Cancel:
    """Queue marker: wakes the pump when the stream is cancelled."""


@dataclass
class GenerationStats:
    tokens: int = 0
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    sha256: Any = field(default_factory=hashlib.sha256)


class Generation:
    def __init__(
        self, job: Job, provider: Provider, buffer: TokenBuffer, sink: EventSink
    ) -> None:
        self.job = job
        self._provider = provider
        self._buffer = buffer
        self._sink = sink
        self._queue: asyncio.Queue[Delta | _End | _Cancel] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._cancel_requested_at: float | None = None
        self._stats = GenerationStats()
        self._pending_tokens = 0  # model tokens held in the buffer

    def cancel(self) -> None:
        """Stop generating: the upstream call is closed now, the stream ends with
        ``done`` / ``finish_reason: cancelled``. Idempotent."""
        if self._cancel_requested_at is not None:
            return
        self._cancel_requested_at = time.monotonic()
        if self._reader is not None:
            self._reader.cancel()
        self._queue.put_nowait(_Cancel())

    async def run(self) -> None:
        started = time.monotonic()
        self._reader = asyncio.create_task(self._read_upstream(), name="upstream")
        try:
            outcome = await self._pump()
        finally:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._emit(self._buffer.flush())
        if isinstance(outcome, UpstreamError):
            await self._sink.error(outcome.code, outcome.message, outcome.retryable)
            return
        await self._sink.done(self._done_data(started, outcome))

    async def _read_upstream(self) -> None:
        try:
            async for delta in self._provider.stream(self.job):
                self._queue.put_nowait(delta)
        except UpstreamError as exc:
            self._queue.put_nowait(_End(exc))
        except Exception as exc:  # an SDK or transport error nobody mapped: end visibly
            log.exception("upstream failed unexpectedly", extra={"stream_id": self.job.stream_id})
            self._queue.put_nowait(_End(UpstreamError("upstream_failed", str(exc), False)))
        else:
            self._queue.put_nowait(_End())

    async def _pump(self) -> str | UpstreamError:
        """Move deltas into the buffer until the upstream ends; returns the
        finish reason, or the upstream's error."""
        while True:
            item = await self._next_item()
            if self._cancel_requested_at is not None:
                return "cancelled"  # even with deltas still queued
            if item is None:  # the buffer's deadline passed while the model was silent
                await self._emit(self._buffer.flush())
            elif isinstance(item, _End):
                if isinstance(item.error, UpstreamError):
                    return item.error
                return self._stats.finish_reason or "stop"
            elif isinstance(item, Delta):
                self._absorb(item)
                if item.text:
                    self._pending_tokens += 1
                    await self._emit(self._buffer.push(item.text, time.monotonic()))

    async def _next_item(self) -> Delta | _End | _Cancel | None:
        if not self._queue.empty():
            return self._queue.get_nowait()
        deadline = self._buffer.deadline()
        if deadline is None:
            return await self._queue.get()
        try:
            async with asyncio.timeout_at(_to_loop_time(deadline)):
                return await self._queue.get()
        except TimeoutError:
            return None

    def _absorb(self, delta: Delta) -> None:
        if delta.finish_reason:
            self._stats.finish_reason = delta.finish_reason
        if delta.usage:
            self._stats.usage = delta.usage

    async def _emit(self, content: str) -> None:
        if not content:
            return
        self._stats.tokens += self._pending_tokens
        self._stats.sha256.update(content.encode())
        count, self._pending_tokens = self._pending_tokens, 0
        if await self._sink.token(content, count):
            self.cancel()

    def _done_data(self, started: float, finish_reason: str) -> dict[str, Any]:
        now = time.monotonic()
        duration = now - started
        data: dict[str, Any] = {
            "finish_reason": finish_reason,
            "tokens": self._stats.tokens,
            "duration_ms": round(duration * 1000),
            "tokens_per_second": round(self._stats.tokens / duration, 2) if duration else 0.0,
            "sha256": self._stats.sha256.hexdigest(),
        }
        if self._stats.usage:
            data["usage"] = self._stats.usage
        if self._cancel_requested_at is not None:
            data["cancel_latency_ms"] = round((now - self._cancel_requested_at) * 1000)
        return data


def _to_loop_time(monotonic_deadline: float) -> float:
    """Buffers count in ``time.monotonic()``; asyncio's loop clock is the same clock
    on CPython, but convert explicitly rather than rely on it."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())
