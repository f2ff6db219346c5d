"""One generation attempt: provider deltas → token buffer → event sink.

Knows neither Redis nor HTTP: the provider and the sink are protocols. The
upstream is read by its own task into a queue, so the buffer's flush deadline
and the upstream deadlines can be honoured while the model is silent, and a
cancel closes the upstream call at once instead of at the next token.

How an upstream failure ends (``Ending``):

- before this attempt sent any text, a retryable failure (429, 5xx, a dropped
  connection) is retried in place after a backoff that honours ``Retry-After``:
  clients see nothing of it;
- after text was sent, or when those retries are used up, a retryable failure
  ends the attempt *without* a terminal event (``restart``): the worker begins
  a new attempt (clients get ``reset``, or, in ``continue`` mode, the text goes
  on), until the job's attempts are used up;
- a silence longer than ``max_gap`` or an attempt longer than ``deadline`` ends
  the stream with ``error`` (``upstream_timeout``); other failures end it with
  their ``error`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tokenwire.buffers import TokenBuffer
from tokenwire.jobs import Job
from tokenwire.worker.observer import (
    GenerationObserver,
    GenerationReport,
    Unobserved,
    UpstreamCall,
)
from tokenwire.worker.providers import Delta, Provider, UpstreamError
from tokenwire.worker.surrogates import SurrogateRepair

log = logging.getLogger(__name__)

#: Deltas read from the model ahead of the buffer. While a write waits (Redis
#: unreachable: the sink retries until it answers) the generation waits with
#: it; the reader stops once this many deltas are queued, so the model's
#: connection is held back by TCP flow control instead of the worker's memory
#: growing. A model that gives up meanwhile fails the attempt (a new one follows).
READ_AHEAD = 256


class EventSink(Protocol):
    async def token(self, content: str, count: int) -> bool:
        """Write one ``token`` event carrying ``count`` model tokens; returns
        whether a cancel was requested meanwhile."""
        ...

    async def done(self, data: dict[str, Any]) -> None: ...

    async def error(self, code: str, message: str, retryable: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    retries: int = 0  # in-place retries before the first token
    backoff: float = 0.5  # first retry delay, doubled each time; Retry-After wins
    deadline: float = 600.0  # one attempt, seconds
    max_gap: float = 60.0  # longest silence, the wait for the first token included


@dataclass(frozen=True, slots=True)
class Ending:
    """How the attempt ended: a terminal event was written (``done``/``error``),
    or nothing terminal was written and the job needs another attempt (``restart``)."""

    kind: Literal["done", "error", "restart"]
    code: str = ""
    message: str = ""


class _End:
    """Queue marker: the upstream finished (``error`` set if it failed)."""

    def __init__(self, error: UpstreamError | None = None) -> None:
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
    """``prefix``/``prior_tokens``: what earlier attempts of the same epoch
    already delivered (``continue`` recovery); the provider continues after it."""

    def __init__(
        self,
        job: Job,
        provider: Provider,
        buffer: TokenBuffer,
        sink: EventSink,
        policy: UpstreamPolicy | None = None,
        *,
        prefix: str = "",
        prior_tokens: int = 0,
        observer: GenerationObserver | None = None,
    ) -> None:
        self.job = job
        self._observer: GenerationObserver = observer or Unobserved()
        self._call: UpstreamCall = Unobserved()
        self._call_started = 0.0
        self._last_text_at: float | None = None  # in the current call
        self._started: float | None = None
        self._first_text_at: float | None = None  # in this attempt
        self._ended_at: float | None = None
        self._finish_reason: str | None = None  # as the done event says it
        self._provider = provider
        self._buffer = buffer
        self._sink = sink
        self._policy = policy or UpstreamPolicy()
        self._prefix = prefix
        self._queue: asyncio.Queue[Delta | _End | _Cancel] = asyncio.Queue(READ_AHEAD)
        self._reader: asyncio.Task[None] | None = None
        self._cancel_requested_at: float | None = None
        self._cancelled = asyncio.Event()
        self._stats = GenerationStats(tokens=prior_tokens)
        self._stats.sha256.update(prefix.encode())
        self._pending_tokens = 0  # model tokens held in the buffer
        self._emitted = False  # this attempt sent text to clients
        self._repair = SurrogateRepair()  # model text is made encodable where it enters

    def cancel(self) -> None:
        """Stop generating: the upstream call is closed now, the stream ends with
        ``done`` / ``finish_reason: cancelled``. Idempotent."""
        if self._cancel_requested_at is not None:
            return
        self._cancel_requested_at = time.monotonic()
        self._cancelled.set()
        if self._reader is not None:
            self._reader.cancel()
        with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes the pump anyway
            self._queue.put_nowait(_Cancel())

    @property
    def report(self) -> GenerationReport:
        """What this attempt did so far (complete once ``run`` returned)."""
        started = self._started or time.monotonic()
        end = self._ended_at or time.monotonic()
        cancel_latency = None
        if self._cancel_requested_at is not None and self._ended_at is not None:
            cancel_latency = max(self._ended_at - self._cancel_requested_at, 0.0)
        return GenerationReport(
            tokens=self._stats.tokens,
            ttft_seconds=None if self._first_text_at is None else self._first_text_at - started,
            duration_seconds=end - started, finish_reason=self._finish_reason,
            cancel_latency_seconds=cancel_latency, usage=self._stats.usage)

    async def run(self) -> Ending:
        try:
            return await self._run()
        finally:
            self._ended_at = time.monotonic()

    async def _run(self) -> Ending:
        started = self._started = time.monotonic()
        outcome = await self._call_with_retries(started)
        await self._emit(self._buffer.flush())  # real output: a continuation keeps it too
        if isinstance(outcome, UpstreamError):
            log.warning("upstream failed (%s): %s", outcome.code,
                        outcome.detail or outcome.message, extra={"stream_id": self.job.stream_id})
            if outcome.retryable:
                return Ending("restart", outcome.code, outcome.message)
            await self._sink.error(outcome.code, outcome.message, outcome.retryable)
            return Ending("error", outcome.code, outcome.message)
        self._finish_reason = outcome
        await self._sink.done(self._done_data(started, outcome))
        return Ending("done")

    async def _call_with_retries(self, started: float) -> str | UpstreamError:
        """Call the upstream; retry a retryable failure while nothing was sent."""
        delay = self._policy.backoff
        for retries_left in range(self._policy.retries, -1, -1):
            outcome = await self._call_once(started)
            if not (isinstance(outcome, UpstreamError) and outcome.retryable
                    and not self._emitted and retries_left):
                return outcome
            wait = outcome.retry_after if outcome.retry_after is not None else delay
            log.warning("upstream failed before the first token (%s: %s); retry in %.2fs",
                        outcome.code, outcome.detail or outcome.message, wait,
                        extra={"stream_id": self.job.stream_id})
            self._buffer.flush()  # never sent: the retry produces it again
            self._repair.reset()
            self._pending_tokens = 0
            with contextlib.suppress(TimeoutError):  # a cancel ends the wait
                async with asyncio.timeout(wait):
                    await self._cancelled.wait()
            delay *= 2
        raise AssertionError("unreachable: the last pass returns")

    async def _call_once(self, started: float) -> str | UpstreamError:
        self._queue = asyncio.Queue(READ_AHEAD)
        if self._cancel_requested_at is not None:
            return "cancelled"
        with self._observer.upstream_call() as call:
            self._call, self._call_started, self._last_text_at = call, time.monotonic(), None
            self._reader = asyncio.create_task(self._read_upstream(), name="upstream")
            try:
                outcome = await self._pump(started)
            finally:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
            call.ended(outcome, self._stats.usage)
            return outcome

    async def _read_upstream(self) -> None:
        queue = self._queue
        try:
            async for delta in self._provider.stream(self.job, self._prefix):
                await queue.put(delta)  # waits while READ_AHEAD deltas are queued
        except UpstreamError as exc:
            await queue.put(_End(exc))
        except Exception as exc:  # an SDK or transport error nobody mapped: end visibly
            # its text is the provider's, not ours: the log gets it (redacted), clients don't
            log.exception("upstream failed unexpectedly", extra={"stream_id": self.job.stream_id})
            await queue.put(_End(UpstreamError(
                "upstream_failed", "the model call failed", False, detail=type(exc).__name__)))
        else:
            await queue.put(_End())

    async def _pump(self, started: float) -> str | UpstreamError:
        """Move deltas into the buffer until the upstream ends; returns the
        finish reason, or the upstream's error."""
        give_up_at = started + self._policy.deadline
        silent_until = time.monotonic() + self._policy.max_gap
        while True:
            item = await self._next_item(min(give_up_at, silent_until))
            if self._cancel_requested_at is not None:
                return "cancelled"  # even with deltas still queued
            if item is None:
                now = time.monotonic()
                if now >= give_up_at or now >= silent_until:
                    which = "deadline" if now >= give_up_at else "silence limit"
                    return UpstreamError("upstream_timeout", f"the model exceeded its {which}",
                                         False)
                await self._emit(self._buffer.flush())  # the buffer's deadline passed
            elif isinstance(item, _End):
                if item.error is not None:
                    return item.error
                tail = self._repair.flush()  # a high surrogate whose low half never came
                await self._emit(self._buffer.push(tail, time.monotonic()))
                return self._stats.finish_reason or "stop"
            elif isinstance(item, Delta):
                now = time.monotonic()
                silent_until = now + self._policy.max_gap
                self._absorb(item)
                if item.text:
                    self._saw_text(now)
                    self._pending_tokens += 1
                    await self._emit(self._buffer.push(self._repair.push(item.text), now))

    async def _next_item(self, upstream_deadline: float) -> Delta | _End | _Cancel | None:
        """The next queued item, or None when a deadline (the buffer's or the
        upstream's) passes first."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        deadline = min(self._buffer.deadline() or upstream_deadline, upstream_deadline)
        try:
            async with asyncio.timeout_at(_to_loop_time(deadline)):
                return await self._queue.get()
        except TimeoutError:
            return None

    def _saw_text(self, now: float) -> None:
        if self._last_text_at is None:
            self._call.first_text(now - self._call_started)
            if self._first_text_at is None:
                self._first_text_at = now
        else:
            self._call.gap(now - self._last_text_at)
        self._last_text_at = now

    def _absorb(self, delta: Delta) -> None:
        if delta.finish_reason:
            self._stats.finish_reason = delta.finish_reason
        if delta.usage:
            self._stats.usage = delta.usage

    async def _emit(self, content: str) -> None:
        if not content:
            return
        self._emitted = True
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
