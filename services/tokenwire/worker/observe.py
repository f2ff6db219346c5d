"""What the worker tells operators about a job: metrics, trace spans, the
operations journal and one log line per finished generation.

``WorkerTelemetry`` is the worker's; ``JobTelemetry`` follows one job through
its attempts (``Worker._attempts`` calls it at each turn), and ``CallObserver``
sees each call to the model from inside ``Generation``. The spans: the job's
(``process tw:jobs``, messaging conventions), a child of the request that
created it; one per attempt (``generate``); one per upstream call (``chat
<model>``, GenAI conventions).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from tokenwire import keys
from tokenwire.jobqueue import Delivery
from tokenwire.jobs import Job
from tokenwire.journal import Journal
from tokenwire.redis_clock import RedisClock, entry_time_ms
from tokenwire.settings import Settings
from tokenwire.store import Appended, Attempt
from tokenwire.tracing import Span, Tracing
from tokenwire.worker.generation import Ending, Generation
from tokenwire.worker.metrics import WorkerMetrics
from tokenwire.worker.observer import UpstreamCall
from tokenwire.worker.providers import UpstreamError

log = logging.getLogger("tokenwire.worker.worker")  # the worker's own lines, one logger


class WorkerTelemetry:
    def __init__(self, metrics: WorkerMetrics, tracing: Tracing, journal: Journal,
                 clock: RedisClock, *, settings: Settings, provider_name: str) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self.journal = journal
        self.clock = clock
        self.provider_name = provider_name
        #: tokens written this long after the last viewer report were unwatched:
        #: an edge reports its viewers at least every ``watch_touch_seconds``
        self.unwatched_after_ms = settings.watch_touch_seconds * 1500

    def job(self, delivery: Delivery, job: Job) -> JobTelemetry:
        return JobTelemetry(self, delivery, job)


class JobTelemetry:
    def __init__(self, worker: WorkerTelemetry, delivery: Delivery, job: Job) -> None:
        self._worker = worker
        self._metrics = worker.metrics
        self._delivery = delivery
        self._job = job
        self._model = worker.metrics.model_label(job.model)
        self.context = {"stream_id": job.stream_id, "job_id": delivery.ref}
        self.attempts = 0

    @contextlib.contextmanager
    def span(self) -> Iterator[Span]:
        """The job's span: a child of the request that created it, if traced."""
        attributes = {
            "messaging.system": "redis", "messaging.operation.type": "process",
            # the partition; the span's name keeps the queue's (a low-cardinality name)
            "messaging.destination.name": self._delivery.partition.stream,
            "messaging.consumer.group.name": keys.WORKERS_GROUP,
            "messaging.message.id": self._delivery.entry_id,
            "tokenwire.stream_id": self._job.stream_id,
        }
        with self._worker.tracing.span(f"process {keys.LEGACY_JOBS}", "consumer", attributes,
                                       parent=self._job.trace) as span:
            yield span

    def attempt_span(self, attempt: Attempt) -> contextlib.AbstractContextManager[Span]:
        return self._worker.tracing.span("generate", attributes={
            "tokenwire.attempt": attempt.attempt, "tokenwire.epoch": attempt.epoch})

    def began(self, attempt: Attempt) -> None:
        self.attempts += 1
        if attempt.attempt == 1:  # enqueue → first attempt, both on Redis' clock
            enqueued_us = entry_time_ms(self._delivery.entry_id) * 1000
            wait = self._worker.clock.seconds_since_us(enqueued_us)
            self._metrics.queue_wait.observe(max(wait, 0.0))

    def observer(self) -> CallObserver:
        return CallObserver(self._worker, self._job, self._model)

    def tokens_written(self, count: int, appended: Appended) -> None:
        self._metrics.tokens.labels(self._model).inc(count)
        unwatched = appended.unwatched_ms
        if unwatched is not None and unwatched > self._worker.unwatched_after_ms:
            self._metrics.unwatched_tokens.inc(count)

    def redis_retried(self, operation: str) -> None:
        self._metrics.redis_retried(operation)

    async def attempt_ended(self, outcome: str, generation: Generation | None = None,
                            ending: Ending | None = None, abandoned: bool = False) -> None:
        """Count an attempt's outcome; for a finished generation, its figures
        (and the log line); for a restart or an error, a journal entry."""
        self._metrics.attempts.labels(outcome).inc()
        if generation is None:
            if outcome == "lost":
                await self._worker.journal.record("lost", self._job.stream_id,
                                                  attempt=self.attempts)
            return
        report = generation.report
        self._metrics.generation.labels(outcome).observe(report.duration_seconds)
        if report.cancel_latency_seconds is not None and outcome == "cancelled":
            self._metrics.cancel_latency.observe(report.cancel_latency_seconds)
        if abandoned:
            self._metrics.abandoned.inc()
        code = ending.code if ending is not None else ""
        if outcome == "restart":
            await self._worker.journal.record("restart", self._job.stream_id, code=code,
                                              attempt=self.attempts)
            return
        if outcome == "error":
            await self._worker.journal.record("error", self._job.stream_id, code=code,
                                              tenant=self._job.tenant or "")
        ttft_ms = None if report.ttft_seconds is None else round(report.ttft_seconds * 1000)
        log.info("generation finished (%s)", outcome, extra={
            **self.context, "outcome": outcome, "finish_reason": report.finish_reason,
            "code": code or None, "tokens": report.tokens, "ttft_ms": ttft_ms,
            "duration_ms": round(report.duration_seconds * 1000), "attempts": self.attempts,
            "model": self._job.model, "tenant": self._job.tenant})

    async def dead_lettered(self, reason: str) -> None:
        self._metrics.dead_letters.labels(reason).inc()
        await self._worker.journal.record("dead_letter", self._job.stream_id, reason=reason,
                                          tenant=self._job.tenant or "")


class CallObserver:
    """``GenerationObserver`` of one attempt: each upstream call is a span
    (``chat <model>``) and feeds the TTFT and inter-token histograms."""

    def __init__(self, worker: WorkerTelemetry, job: Job, model_label: str) -> None:
        self._tracing = worker.tracing
        self._metrics = worker.metrics
        self._job = job
        self._provider = worker.provider_name
        self._ttft = worker.metrics.ttft.labels(model_label)
        self._gap = worker.metrics.inter_token.labels(model_label)

    @contextlib.contextmanager
    def upstream_call(self) -> Iterator[UpstreamCall]:
        job = self._job
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": self._provider,
            "gen_ai.system": self._provider, "gen_ai.request.model": job.model,
        }
        if job.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = job.max_tokens
        if job.temperature is not None:
            attributes["gen_ai.request.temperature"] = job.temperature
        with self._tracing.span(f"chat {job.model}", "client", attributes) as span:
            yield _Call(self, span)


class _Call:
    __slots__ = ("_observer", "_span")

    def __init__(self, observer: CallObserver, span: Span) -> None:
        self._observer = observer
        self._span = span

    def first_text(self, seconds: float) -> None:
        self._observer._ttft.observe(seconds)
        self._span.set("tokenwire.time_to_first_token", seconds)

    def gap(self, seconds: float) -> None:
        self._observer._gap.observe(seconds)

    def ended(self, outcome: str | UpstreamError, usage: dict[str, Any] | None) -> None:
        if isinstance(outcome, UpstreamError):
            self._observer._metrics.upstream_errors.labels(outcome.code).inc()
            self._span.fail(outcome.code)
            return
        self._span.set("gen_ai.response.finish_reasons", [outcome])
        if usage:
            self._span.set("gen_ai.usage.input_tokens", usage.get("prompt_tokens"))
            self._span.set("gen_ai.usage.output_tokens", usage.get("completion_tokens"))
