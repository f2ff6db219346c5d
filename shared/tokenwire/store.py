"""Per-stream state in Redis: the meta hash, the event stream, the text.

Every write goes through one of three server-side scripts (``scripts/``):
``begin`` (a new attempt and epoch), ``append`` (fenced, seq-checked batches)
and ``cancel``. Reads that must agree with each other (meta and text) are one
``MULTI``. The store knows Redis, not HTTP.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from redis.exceptions import OutOfMemoryError

from tokenwire import keys
from tokenwire.errors import (
    FencedWrite,
    InvalidValue,
    OverLimit,
    SequenceConflict,
    StreamLost,
    StreamNotFound,
    StreamNotRunning,
    Unavailable,
    WriteRejected,
)
from tokenwire.events import Event, dumps
from tokenwire.jobqueue import Delivery, partition_for, partition_limit
from tokenwire.jobs import Job
from tokenwire.pipelining import ScriptBatcher
from tokenwire.redis_client import RedisClient
from tokenwire.scriptfiles import load_script
from tokenwire.settings import Settings

TERMINAL_STATUSES = frozenset({"done", "error", "cancelled"})
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _events_of(entries: list[tuple[str, dict[str, str]]]) -> list[Event]:
    """Stream entries (id ``<seq>-0``, fields ``e``, ``t``, ``d``, and ``a``
    when the append script stamped Redis' time) as events."""
    return [Event(fields["e"], int(entry_id.split("-", 1)[0]), fields["t"], fields["d"],
                  int(fields["a"]) if "a" in fields else None)
            for entry_id, fields in entries]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class StreamMeta:
    """What the meta hash says about one stream."""

    stream_id: str
    status: str
    epoch: str | None
    attempt: int
    last_seq: int
    model: str
    tokens: int
    created_at_ms: int
    finished_at_ms: int | None
    final: dict[str, Any] | None
    idle_cancel_ms: int | None = None  # the job's on_disconnect: cancel_after
    tenant: str | None = None  # who created it (None: with auth disabled)
    key_id: str | None = None  # the API key that created it (its limits count it)
    conversation: str | None = None  # the conversation whose turn it is
    facade: dict[str, Any] | None = None  # a protocol facade's request parameters
    #: the attempt that began the current epoch: epochs of one stream are
    #: ordered by it (a continued attempt keeps the epoch and this number)
    epoch_attempt: int = 0

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_hash(cls, stream_id: str, raw: dict[str, str]) -> StreamMeta:
        final = raw.get("final")
        return cls(
            stream_id=stream_id,
            status=raw.get("status", "queued"),
            epoch=raw.get("epoch") or None,
            attempt=int(raw.get("attempt", 0)),
            last_seq=int(raw.get("last_seq", 0)),
            model=raw.get("model", ""),
            tokens=int(raw.get("tokens", 0)),
            created_at_ms=int(raw.get("created_at", 0)),
            finished_at_ms=int(raw["finished_at"]) if "finished_at" in raw else None,
            final=Event("", 0, "", final).payload() if final else None,
            idle_cancel_ms=int(raw["idle_cancel_ms"]) if "idle_cancel_ms" in raw else None,
            tenant=raw.get("tenant"), key_id=raw.get("key_id"),
            conversation=raw.get("conversation"),
            facade=json.loads(raw["facade"]) if "facade" in raw else None,
            epoch_attempt=int(raw.get("epoch_attempt", 0)),
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Meta and the epoch's text, read atomically: ``text`` is exactly the token
    content of events ``1..meta.last_seq`` of ``meta.epoch``."""

    meta: StreamMeta
    text: str


@dataclass(frozen=True, slots=True)
class Page:
    """Up to ``count`` events of a stream after ``after_seq`` and its meta, read
    atomically: ``events`` are of ``meta.epoch``, in order (fewer than
    ``count``: there are no more). ``meta`` is None when the stream has no record."""

    meta: StreamMeta | None
    after_seq: int
    count: int
    events: list[Event]


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event a worker is about to append; ``content`` is the text it adds."""

    type: str
    data: str
    content: str = ""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One generation attempt, as ``begin`` granted it. A continued attempt keeps
    the epoch: ``last_seq``, ``text`` and ``tokens`` are what it continues from."""

    stream_id: str
    attempt: int
    epoch: str
    cancel_requested: bool
    last_seq: int = 1
    text: str = ""
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class Appended:
    """An append's reply: whether a cancel was requested, and for a stream with
    an ``on_disconnect`` policy how long no edge has reported a viewer (ms;
    None without the policy)."""

    cancel_requested: bool
    unwatched_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Dead:
    """``begin`` found the job's attempts used up and ended the stream with an error."""

    attempts: int


@dataclass(frozen=True, slots=True)
class NoWork:
    """``begin`` found nothing to generate: the stream ended, is gone, or belongs
    to another job entry (the same job enqueued twice)."""

    reason: str


class Admission(Protocol):
    """Counts a new stream against its creator's limits (``limits.KeyLimiter``)."""

    async def admit(self, job: Job) -> None: ...

    async def undo(self, job: Job) -> None: ...


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """``status`` after a cancel request; ``key_id``: the creator's key, whose
    running slot is free when a queued stream was ended right away."""

    status: str
    key_id: str | None = None


class StreamStore:
    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._begin = redis.register_script(load_script("begin"))
        self._append = redis.register_script(load_script("append"))
        # The terminal write may exceed maxmemory: a generation must be able to end.
        self._append_final = redis.register_script(load_script("append", allow_oom=True))
        self._cancel = redis.register_script(load_script("cancel", allow_oom=True))
        self._touch = redis.register_script(load_script("touch"))
        self._enqueue = redis.register_script(load_script("enqueue", prelude=False))
        # Appends of concurrent generations share round trips (see ``pipelining``).
        self._batcher = ScriptBatcher(redis)

    async def load_scripts(self) -> None:
        """Load every script now: loading one later (``SCRIPT LOAD`` on first use)
        is refused when Redis is out of memory, just when the terminal write
        must get through. Redis forgets them on restart; they reload on use."""
        for script in (self._begin, self._append, self._append_final, self._cancel,
                       self._touch, self._enqueue):
            await self._redis.script_load(script.script)

    @property
    def batcher(self) -> ScriptBatcher:
        """The pipeline of this store's appends (other counts may share it)."""
        return self._batcher

    # --- creating (edge) -------------------------------------------------------

    async def create(self, job: Job, idempotency_key: str | None, fingerprint: str,
                     admission: Admission | None = None) -> str:
        """Record and enqueue a job; returns its stream id.

        With an ``Idempotency-Key`` (scoped to ``job.tenant``), a retry of the
        same request returns the first stream id, counted once; the same key
        with a different body is refused (422). ``admission`` counts the job
        against its creator's limits, and takes that back if it is not enqueued.
        """
        idem_key = keys.idempotency(idempotency_key, job.tenant) if idempotency_key else None
        if idem_key is not None:
            claimed = await self._redis.set(
                idem_key, f"{job.stream_id} {fingerprint}", nx=True,
                ex=self._settings.idempotency_ttl_seconds,
            )
            if not claimed:
                return await self._replay_idempotent(idem_key, fingerprint)
        try:
            if admission is not None:
                await admission.admit(job)
            try:
                await self._write_new_stream(job)
            except BaseException:
                if admission is not None:
                    await admission.undo(job)
                raise
        except BaseException as exc:
            if idem_key is not None:
                await self._redis.delete(idem_key)
            if isinstance(exc, OutOfMemoryError):  # also raised for a refused MULTI
                raise Unavailable("capacity", "the server is out of capacity; retry later",
                                  retry_after=5) from exc
            raise
        return job.stream_id

    async def _replay_idempotent(self, idem_key: str, fingerprint: str) -> str:
        stored = cast(str | None, await self._redis.get(idem_key))
        if stored is None:  # expired between SET NX and GET: vanishingly rare
            raise OverLimit("idempotency_race", "retry the request", retry_after=1)
        stream_id, stored_fingerprint = stored.split(" ", 1)
        if stored_fingerprint != fingerprint:
            raise InvalidValue(
                "idempotency_conflict", "this Idempotency-Key was used with a different body"
            )
        return stream_id

    async def _write_new_stream(self, job: Job) -> None:
        meta_key = keys.meta(job.stream_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(meta_key, mapping=job.meta_fields())  # type: ignore[arg-type]
            pipe.expire(meta_key, self._settings.meta_ttl_seconds)
            await pipe.execute()
        try:
            # Listed for operators before a worker can take it (and unlist it at the end).
            await self._redis.zadd(keys.ACTIVE_STREAMS, {job.stream_id: job.created_at_ms})
            # The job's partition lives on another Cluster slot: a second step.
            # No MAXLEN here: trimming would drop unfinished jobs; the queue is
            # bounded by admission (429) instead — checked in the same script
            # as the add, so concurrent requests cannot overshoot it — and done
            # jobs are deleted.
            settings = self._settings
            partition = partition_for(job.stream_id, settings.job_partitions)
            entry = await self._enqueue(
                keys=[partition.stream],
                args=[partition_limit(settings.max_queue_length, settings.job_partitions),
                      job.model_dump_json(), keys.JOBS_WAKE_CHANNEL, str(partition.index)])
            if entry is None:
                raise OverLimit("queue_full", "too many queued jobs; retry later", retry_after=2)
        except BaseException:
            await self._redis.delete(meta_key)
            await self._redis.zrem(keys.ACTIVE_STREAMS, job.stream_id)
            raise

    async def deactivate(self, stream_id: str) -> None:
        """The stream ended: no longer listed as queued or running (idempotent)."""
        await self._redis.zrem(keys.ACTIVE_STREAMS, stream_id)

    # --- reading (edge) ---------------------------------------------------------

    async def meta(self, stream_id: str) -> StreamMeta | None:
        raw = cast(dict[str, str], await self._redis.hgetall(keys.meta(stream_id)))
        return StreamMeta.from_hash(stream_id, raw) if raw else None

    async def snapshot(self, stream_id: str) -> Snapshot | None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.meta(stream_id))
            pipe.get(keys.text(stream_id))
            results = await pipe.execute()
        raw, text = cast(dict[str, str], results[0]), cast(str | None, results[1])
        if not raw:
            return None
        return Snapshot(StreamMeta.from_hash(stream_id, raw), text or "")

    async def read_events(self, stream_id: str, after_seq: int, count: int) -> list[Event]:
        entries = cast(list[tuple[str, dict[str, str]]], await self._redis.xrange(
            keys.events(stream_id), min=f"{after_seq + 1}-0", max="+", count=count
        ))
        return _events_of(entries)

    async def read_page(self, stream_id: str, after_seq: int, count: int) -> Page:
        """Meta and up to ``count`` events after ``after_seq``, in one ``MULTI``:
        the events belong to the epoch the meta names (a new epoch replaces the
        events in the same script that changes the meta)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.meta(stream_id))
            pipe.xrange(keys.events(stream_id), min=f"{after_seq + 1}-0", max="+", count=count)
            raw, entries = await pipe.execute()
        meta = StreamMeta.from_hash(stream_id, raw) if raw else None
        return Page(meta, after_seq, count, _events_of(entries) if meta is not None else [])

    async def events_exist(self, stream_id: str) -> bool:
        return bool(await self._redis.exists(keys.events(stream_id)))

    # --- cancelling (edge) ------------------------------------------------------

    async def cancel(self, stream_id: str, tenant: str | None = None) -> CancelOutcome:
        """The stream's status after the request: ``cancelled`` (it was queued
        and is now ended), ``cancelling`` (a worker is told), or the status it
        had already ended with. ``tenant``: only a stream of this tenant is
        found (another tenant's is ``StreamNotFound``, like an unknown one)."""
        done_data = dumps({
            "finish_reason": "cancelled", "tokens": 0, "duration_ms": 0,
            "tokens_per_second": 0.0, "sha256": EMPTY_SHA256,
        })
        reply = await self._cancel(
            keys=keys.stream_keys(stream_id),
            args=[keys.new_epoch(), now_ms(), stream_id, self._settings.events_maxlen,
                  self._settings.meta_ttl_seconds, self._settings.events_ttl_seconds,
                  done_data, tenant or ""],
        )
        status = str(reply[0])
        if status == "missing":
            raise StreamNotFound()
        if status == "cancelling":
            await self._redis.publish(keys.CANCEL_CHANNEL, stream_id)
        return CancelOutcome(status, str(reply[1]) if len(reply) > 1 and reply[1] else None)

    # --- writing (worker) -------------------------------------------------------

    async def begin(
        self, job: Job, job_entry: str, owner: str, *, recreate: bool = False,
        last_failure: str = "",
    ) -> Attempt | Dead | NoWork:
        """Start the next attempt of ``job`` (its queue entry ``job_entry``): a new
        epoch, or the same one continued (see ``begin.lua``). ``recreate``: Redis
        lost the stream while this worker generated it; rebuild its record.
        ``last_failure``: the error code that ended the previous attempt, for the
        ``error`` event clients get if no attempts are left."""
        settings = self._settings
        dead_data = dumps({
            "code": last_failure or "attempts_exhausted", "retryable": False,
            "message": f"generation failed {settings.max_attempts} times"
                       + (f", last with {last_failure}" if last_failure else ""),
        })
        args: list[str | int] = [
            keys.new_epoch(), owner, now_ms(), job.model, job.stream_id,
            settings.events_maxlen, settings.meta_ttl_seconds, job_entry,
            settings.recovery_mode, settings.max_attempts, "1" if recreate else "0",
            settings.events_ttl_seconds, dead_data,
        ]
        if recreate:
            for field_name, value in job.meta_fields().items():
                args += [field_name, value]
        reply = await self._begin(keys=keys.stream_keys(job.stream_id), args=args)
        if reply[0] == "dead":
            return Dead(int(reply[1]))
        if reply[0] != "ok":
            return NoWork(str(reply[-1]))
        return Attempt(job.stream_id, int(reply[1]), str(reply[3]), reply[2] == "1",
                       last_seq=int(reply[4]), text=str(reply[5]), tokens=int(reply[6]))

    async def dead_letter(self, job: Job, job_entry: Delivery, reason: str) -> None:
        """Keep a failed job for operators (its partition's dead letters, capped)."""
        await self._redis.xadd(job_entry.partition.dead, {
            "job": job.model_dump_json(), "entry": job_entry.entry_id, "reason": reason,
            "stream_id": job.stream_id, "at": now_ms(),
        }, maxlen=self._settings.max_queue_length, approximate=True)

    async def touch(self, stream_ids: Sequence[str]) -> None:
        """Record that clients are watching these streams now (``on_disconnect``)."""
        now = now_ms()
        replies = await self._batcher.run_together(
            [(self._touch, keys.stream_keys(stream_id), [now]) for stream_id in stream_ids])
        if errors := [reply for reply in replies if isinstance(reply, Exception)]:
            raise errors[0]

    async def append(
        self,
        attempt: Attempt,
        first_seq: int,
        batch: Sequence[PendingEvent],
        final_status: str = "",
        tokens_delta: int = 0,
    ) -> Appended:
        """Append ``batch`` as seqs ``first_seq...``. Raises a ``WriteRejected``
        when this attempt may not write. The terminal batch (``final_status``)
        goes through even when Redis is out of memory: a generation must be
        able to end visibly."""
        script = self._append_final if final_status else self._append
        reply = await self._batcher.call(
            script, keys.stream_keys(attempt.stream_id),
            self._append_args(attempt, first_seq, batch, final_status, tokens_delta))
        return self._append_outcome(attempt, first_seq, reply)

    async def append_many(
        self, writes: Sequence[tuple[Attempt, int, Sequence[PendingEvent]]]
    ) -> list[bool | WriteRejected]:
        """Several streams' appends in one pipelined round trip (not one
        transaction: each append is atomic on its own). Returns, per write, the
        cancel flag or the rejection."""
        replies = await self._batcher.run_together([
            (self._append, keys.stream_keys(attempt.stream_id),
             self._append_args(attempt, first_seq, batch, "", 0))
            for attempt, first_seq, batch in writes])
        outcomes: list[bool | WriteRejected] = []
        for (attempt, first_seq, _), reply in zip(writes, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            try:
                outcomes.append(self._append_outcome(attempt, first_seq, reply).cancel_requested)
            except WriteRejected as exc:
                outcomes.append(exc)
        return outcomes

    def _append_args(self, attempt: Attempt, first_seq: int, batch: Sequence[PendingEvent],
                     final_status: str, tokens_delta: int) -> list[str | int]:
        args: list[str | int] = [
            attempt.attempt, first_seq, self._settings.events_maxlen,
            self._settings.events_ttl_seconds, final_status, tokens_delta, now_ms(),
        ]
        for event in batch:
            args += [event.type, event.data, event.content]
        return args

    @staticmethod
    def _append_outcome(attempt: Attempt, first_seq: int, reply: list[Any]) -> Appended:
        outcome = reply[0]
        if outcome in ("ok", "duplicate"):
            unwatched = int(reply[2]) if len(reply) > 2 else -1
            return Appended(reply[1] == "1", unwatched if unwatched >= 0 else None)
        if outcome == "fenced":
            raise FencedWrite(attempt.stream_id)
        if outcome == "seq_conflict":
            last_seq = int(reply[1])
            if last_seq < first_seq - 1:  # Redis has less than this attempt wrote
                raise StreamLost(attempt.stream_id, f"Redis kept only seq {last_seq}")
            raise SequenceConflict(attempt.stream_id, last_seq + 1, first_seq)
        if outcome == "missing":
            raise StreamLost(attempt.stream_id, "its record is gone")
        raise StreamNotRunning(attempt.stream_id, str(reply[1]))
