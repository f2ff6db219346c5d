"""The worker: one class, a visible lifecycle — ``startup``, the intake loop, ``shutdown``.

- Concurrency is bounded: the loop only reads as many jobs as it has free slots,
  from the job partitions ``intake`` picks (woken ones at once, every one now
  and then; the legacy ``tw:jobs`` too).
- Every job runs in a task kept in ``_tasks``; its outcome is logged.
- A job is acknowledged only after its terminal event is written.
- Jobs whose worker died are reclaimed with ``XAUTOCLAIM`` and run as a new
  attempt (new epoch: clients get ``reset``; or the same epoch continued, see
  ``begin.lua``); the claims of running jobs are refreshed so a long
  generation is not stolen while alive.
- An attempt that ends without a terminal event (a retryable upstream failure,
  Redis losing the stream) is followed by the next one at once; a job whose
  attempts are used up ends with ``error`` and is kept on ``tw:jobs:dead``, as
  is every job that ended with an ``error``.
- ``stop()`` (SIGTERM) ends intake at once, whatever the load; running
  generations get a grace period, then are cancelled and released for another
  worker to reclaim at once.
- A job it holds survives a Redis outage of any length up to the job's
  deadline (``upstream_deadline_seconds`` from its start): its Redis calls are
  retried until Redis answers (``retrying``), and a record Redis lost is
  rebuilt from the job (``begin``'s ``recreate``).
- The helper tasks (claim refresher, the pub/sub listener of cancels and
  wake-ups) run supervised: a failure is logged and the helper restarts.
- ``burst=True`` runs until the queue is empty: tests finish without sleeps.
- What operators see of it — metrics, trace spans, the operations journal,
  one log line per finished generation — is ``observe``'s; ``intake`` tells
  the probes (``probes``) whether it takes jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from redis.exceptions import ResponseError

from tokenwire.buffers import make_buffer
from tokenwire.conversations import ConversationStore
from tokenwire.errors import FencedWrite, OutOfCapacity, StreamLost, WriteRejected
from tokenwire.jobqueue import Delivery, JobQueue
from tokenwire.jobs import Job
from tokenwire.journal import Journal
from tokenwire.limits import KeyLimiter
from tokenwire.redis_client import TRANSPORT_ERRORS, RedisClient
from tokenwire.redis_clock import RedisClock
from tokenwire.settings import Settings
from tokenwire.store import Attempt, Dead, NoWork, StreamStore
from tokenwire.supervision import start_supervised
from tokenwire.tracing import NO_TRACING, Tracing
from tokenwire.worker.broadcasts import Broadcasts
from tokenwire.worker.generation import Ending, Generation, UpstreamPolicy
from tokenwire.worker.intake import Intake
from tokenwire.worker.metrics import WorkerMetrics
from tokenwire.worker.observe import JobTelemetry, WorkerTelemetry
from tokenwire.worker.probes import IntakeState
from tokenwire.worker.providers import Provider
from tokenwire.worker.retrying import until_redis_answers
from tokenwire.worker.sink import RedisEventSink

log = logging.getLogger(__name__)

T = TypeVar("T")


def _outcome(ending: Ending, generation: Generation) -> str:
    """How an attempt ended, as the metrics name it."""
    if ending.kind == "done" and generation.report.finish_reason == "cancelled":
        return "cancelled"
    return ending.kind


class Worker:
    def __init__(
        self, redis: RedisClient, settings: Settings, provider: Provider, *, burst: bool = False,
        metrics: WorkerMetrics | None = None, tracing: Tracing = NO_TRACING,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._provider = provider
        self._burst = burst
        self._store = StreamStore(redis, settings)
        self._conversations = ConversationStore(redis, settings)
        self._queue = JobQueue(redis, settings.consumer_name, settings.worker_claim_timeout_ms,
                               settings.job_partitions)
        self.intake = IntakeState()  # for the probes
        self.intake.partitions = len(self._queue.partitions)
        # Burst mode looks at every partition each time: it ends when all are empty.
        self._intake = Intake(self._queue, 0.0 if burst else settings.read_block_ms / 1000,
                              self._reclaim_interval(), self.intake.partition_read)
        self._broadcasts = Broadcasts(redis, self._cancel_local, self._intake.wake,
                                      self._intake.sweep_soon)
        # Token counts share the appends' pipeline (see ``limits``).
        self._limiter = KeyLimiter(redis, settings, self._store.batcher)
        self._tasks: dict[str, asyncio.Task[None]] = {}  # delivery ref -> its task
        self._deliveries: dict[str, Delivery] = {}  # delivery ref -> the job it runs
        # delivery ref -> (API key id, stream id): running slots to keep alive
        self._slots: dict[str, tuple[str, str]] = {}
        self._generations: dict[str, Generation] = {}  # stream id -> live generation
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        # Loops poll this as well as being cancelled: on Python 3.11 a cancel that
        # races with a timeout inside redis-py can be swallowed.
        self._closing = False
        self._helpers: list[asyncio.Task[None]] = []
        self.jobs_finished = 0
        self.metrics = metrics or WorkerMetrics(settings.served_models)
        self.metrics.watch(lambda: len(self._tasks), settings.worker_concurrency)
        self.clock = RedisClock(redis)
        self._telemetry = WorkerTelemetry(self.metrics, tracing, Journal(redis), self.clock,
                                          settings=settings, provider_name=provider.name)

    # --- lifecycle ----------------------------------------------------------------

    async def run(self) -> None:
        await self.startup()
        try:
            await self._intake_loop()
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        await self._queue.ensure_groups()
        await self.clock.sample()
        await self._store.load_scripts()
        await self._conversations.load_scripts()
        await self._limiter.load_scripts()
        self._helpers = [start_supervised("refresh-claims", self._refresh_claims)]
        self._broadcasts.start()
        self.intake.started()
        log.info("worker started", extra={"consumer": self._queue.consumer,
                                          "provider": self._provider.name})

    def stop(self) -> None:
        """Stop taking jobs (signal handlers call this), even with every slot busy."""
        self.intake.stopped()
        self._stopping.set()
        self._slot_freed.set()  # the intake loop may be waiting for a free slot

    async def shutdown(self) -> None:
        self.intake.stopped()
        self._stopping.set()
        if self._tasks:
            tasks = list(self._tasks.values())
            log.info("draining %d generations", len(tasks))
            _, pending = await asyncio.wait(
                tasks, timeout=self._settings.worker_shutdown_grace_seconds
            )
            unfinished = [self._deliveries[task.get_name()] for task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            # Still pending in the group: hand them over now, not after the claim timeout.
            with contextlib.suppress(*TRANSPORT_ERRORS, ResponseError):
                await self._queue.release(unfinished)
        self._closing = True
        await self._broadcasts.close()
        for helper in self._helpers:
            helper.cancel()
        for outcome in await asyncio.gather(*self._helpers, return_exceptions=True):
            if isinstance(outcome, Exception):  # supervised: only a bug gets here
                log.error("helper task failed", exc_info=outcome)
        log.info("worker stopped", extra={"consumer": self._queue.consumer})

    # --- intake -------------------------------------------------------------------

    async def _intake_loop(self) -> None:
        while not self._stopping.is_set():
            self.intake.beat()
            free = self._settings.worker_concurrency - len(self._tasks)
            if free <= 0:
                self._slot_freed.clear()
                with self.intake.waiting_for_a_slot():
                    await self._wait_for(self._slot_freed)
                continue
            try:
                deliveries = await self._intake.take(free)
            except TRANSPORT_ERRORS as exc:
                log.warning("redis unavailable, retrying: %s", exc)
                await self._wait_for(self._stopping, 1.0)
                continue
            for delivery in deliveries:
                self._start(delivery)
            if deliveries:
                continue  # a partition may hold more
            if self._burst:
                if not self._tasks:
                    return
                self._slot_freed.clear()
                await self._wait_for(self._slot_freed, 0.05)
                continue
            await self._intake.wait(self._stopping)

    def _reclaim_interval(self) -> float:
        return max(0.05, self._settings.worker_claim_timeout_ms / 2000)

    async def _wait_for(self, event: asyncio.Event, max_seconds: float | None = None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_seconds):
                await event.wait()

    def _start(self, delivery: Delivery) -> None:
        ref = delivery.ref
        if ref in self._tasks:
            # Our own job, reclaimed by us: its claim went stale while Redis was
            # away (the refresh failed). It is running; the reclaim refreshed it.
            # A second task would fence the first, and the two would take it from
            # each other until its attempts ran out.
            log.info("reclaimed a job this worker is running; it goes on",
                     extra={"job_id": ref})
            return
        task = asyncio.create_task(self._process(delivery), name=ref)
        self._tasks[ref] = task
        self._deliveries[ref] = delivery
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if self._tasks.get(task.get_name()) is task:
            del self._tasks[task.get_name()]
            self._deliveries.pop(task.get_name(), None)
            self._slots.pop(task.get_name(), None)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("job task failed", exc_info=task.exception(),
                      extra={"job_id": task.get_name()})

    # --- one job ------------------------------------------------------------------

    async def _process(self, delivery: Delivery) -> None:
        job = delivery.job
        if job is None:
            log.error("unreadable job dropped", extra={"job_id": delivery.ref})
            await self._queue.ack(delivery)
            return
        telemetry = self._telemetry.job(delivery, job)
        context = telemetry.context
        if job.key_id is not None:
            self._slots[delivery.ref] = (job.key_id, job.stream_id)
        deadline = time.monotonic() + self._settings.upstream_deadline_seconds
        try:
            with telemetry.span():
                await self._attempts(delivery, job, deadline, telemetry)
        except TRANSPORT_ERRORS as exc:
            log.error("Redis unreachable past the job's deadline; it stays pending: %s", exc,
                      extra=context)

    async def _attempts(self, delivery: Delivery, job: Job, deadline: float,
                        telemetry: JobTelemetry) -> None:
        recreate, last_failure = False, ""
        context = telemetry.context

        async def begin() -> Attempt | Dead | NoWork:
            return await self._store.begin(job, delivery.entry_id, self._queue.consumer,
                                           recreate=recreate, last_failure=last_failure)

        # Each pass is one attempt; begin() counts them, so this ends (Dead) —
        # except when Redis keeps losing the stream, hence the bound.
        for _ in range(2 * self._settings.max_attempts + 2):
            began = await self._until_redis(begin, deadline, "begin", telemetry)
            recreate = False
            if isinstance(began, NoWork):
                log.info("job needs no generation (%s)", began.reason, extra=context)
                break
            if isinstance(began, Dead):
                log.error("job failed %d times: dead-lettered", began.attempts, extra=context)
                await self._dead_letter(job, delivery, last_failure or "attempts_exhausted",
                                        deadline, telemetry)
                break
            log.info("generation started", extra={**context, "attempt": began.attempt,
                                                  "continued": began.last_seq > 1,
                                                  "reclaimed": delivery.reclaimed})
            telemetry.began(began)
            try:
                with telemetry.attempt_span(began) as span:
                    ending, generation, abandoned = await self._generate(
                        job, began, deadline, telemetry)
                    outcome = _outcome(ending, generation)
                    span.set("tokenwire.outcome", outcome)
            except FencedWrite as exc:  # another worker owns the stream now; it acks
                log.warning("generation stopped: %s", exc.message, extra=context)
                await telemetry.attempt_ended("fenced")
                return
            except StreamLost as exc:
                log.warning("Redis lost this stream's writes (%s): beginning again",
                            exc.message, extra=context)
                await telemetry.attempt_ended("lost")
                recreate = True
                continue
            except WriteRejected as exc:  # ended meanwhile (e.g. cancelled and done)
                log.warning("generation stopped: %s", exc.message, extra=context)
                await telemetry.attempt_ended("ended")
                break
            await telemetry.attempt_ended(outcome, generation, ending, abandoned)
            if ending.kind == "restart":
                log.warning("attempt %d failed (%s): next attempt", began.attempt, ending.code,
                            extra=context)
                last_failure = ending.code
                continue
            if ending.kind == "error":
                await self._dead_letter(job, delivery, ending.code, deadline, telemetry)
            self.jobs_finished += 1
            break
        else:
            log.error("giving up on this job for now; it stays pending", extra=context)
            return
        # The stream ended (or needs nothing): its creator's running slot is free,
        # and a conversation's turn appends its answer — before the ack, so a
        # worker that dies here leaves the job to one that settles it (settling
        # twice appends once).
        await self._until_redis(lambda: self._limiter.release(job.key_id, job.stream_id),
                                  deadline, "release", telemetry)
        await self._until_redis(lambda: self._store.deactivate(job.stream_id), deadline,
                                "deactivate", telemetry)
        if (conversation := job.conversation) is not None:
            await self._until_redis(
                lambda: self._conversations.settle(job.tenant, conversation, job.stream_id,
                                                   self._store),
                deadline, "settle", telemetry)
        await self._until_redis(lambda: self._queue.ack(delivery), deadline, "ack", telemetry)

    async def _dead_letter(self, job: Job, delivery: Delivery, reason: str, deadline: float,
                           telemetry: JobTelemetry) -> None:
        await self._until_redis(lambda: self._store.dead_letter(job, delivery, reason),
                                deadline, "dead-letter", telemetry)
        await telemetry.dead_lettered(reason)

    async def _until_redis(self, call: Callable[[], Awaitable[T]], deadline: float, what: str,
                           telemetry: JobTelemetry) -> T:
        """``retrying.until_redis_answers``, each retry counted."""
        return await until_redis_answers(call, deadline, what, telemetry.context,
                                         telemetry.redis_retried)

    async def _generate(self, job: Job, began: Attempt, deadline: float,
                        telemetry: JobTelemetry) -> tuple[Ending, Generation, bool]:
        """The attempt's ending, its generation, and whether it was cancelled
        because nobody watched (``on_disconnect``)."""
        settings = self._settings
        buffer = make_buffer(job.buffer, settings.flush_interval_ms / 1000,
                             settings.coalesce_chars)
        spend = partial(self._limiter.spend, job.key_id) if job.key_id is not None else None
        sink = RedisEventSink(self._store, began, deadline, spend,
                              on_tokens=telemetry.tokens_written,
                              on_retry=telemetry.redis_retried)
        policy = UpstreamPolicy(settings.upstream_retries, settings.upstream_backoff_seconds,
                                settings.upstream_deadline_seconds,
                                settings.upstream_max_gap_seconds)
        generation = Generation(job, self._provider, buffer, sink, policy,
                                prefix=began.text, prior_tokens=began.tokens,
                                observer=telemetry.observer())
        self._generations[job.stream_id] = generation
        if began.cancel_requested:
            generation.cancel()
        try:
            ending = await generation.run()
        except OutOfCapacity as exc:  # the terminal write may exceed maxmemory
            await sink.error(exc.code, exc.message, True)
            ending = Ending("error", exc.code, exc.message)
        finally:
            self._generations.pop(job.stream_id, None)
        unwatched = sink.last_appended.unwatched_ms if sink.last_appended else None
        abandoned = (job.idle_cancel_ms is not None and unwatched is not None
                     and unwatched > job.idle_cancel_ms)
        return ending, generation, abandoned

    # --- helpers ------------------------------------------------------------------

    async def _refresh_claims(self) -> None:
        interval = self._settings.worker_claim_timeout_ms / 3000
        wait = interval
        while not self._closing:
            await asyncio.sleep(wait)
            try:
                await self._queue.refresh(list(self._deliveries.values()))
                await self._limiter.refresh_running(list(self._slots.values()))
                await self.clock.sample()  # queue waits are measured on Redis' clock
                wait = interval
            except (*TRANSPORT_ERRORS, ResponseError) as exc:
                # Again soon: when Redis is back, claim before anyone reclaims.
                log.warning("claim refresh failed: %s", exc)
                wait = min(interval, 0.5)

    def _cancel_local(self, stream_id: str) -> None:
        generation = self._generations.get(stream_id)
        if generation is not None:
            log.info("cancel requested", extra={"stream_id": stream_id})
            generation.cancel()
