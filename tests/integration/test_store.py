"""The Redis data model and its scripts, against a real Valkey server and a
real Valkey Cluster."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import SettingsFactory
from tests.support.jobs import queued_jobs
from tests.support.streams import begin_attempt, new_job
from tokenwire import keys
from tokenwire.errors import (
    FencedWrite,
    InvalidValue,
    OverLimit,
    SequenceConflict,
    StreamLost,
    StreamNotRunning,
)
from tokenwire.events import dumps
from tokenwire.jobs import Job
from tokenwire.redis_client import RedisClient
from tokenwire.settings import Settings
from tokenwire.store import Attempt, Dead, NoWork, PendingEvent, StreamStore

pytestmark = pytest.mark.both_backends


def token(content: str) -> PendingEvent:
    return PendingEvent("token", dumps({"content": content}), content)


async def started(store: StreamStore, job: Job | None = None) -> Attempt:
    """A created stream whose first attempt began (queue entry ``1-0``, worker w1)."""
    job = job or new_job()
    await store.create(job, None, "fp")
    attempt = await store.begin(job, "1-0", "w1")
    assert isinstance(attempt, Attempt)
    return attempt


async def test_create_records_a_queued_stream_and_enqueues_the_job(redis: RedisClient,
                                                                   settings: Settings) -> None:
    store = StreamStore(redis, settings)
    job = new_job()
    assert await store.create(job, None, "fp") == job.stream_id
    meta = await store.meta(job.stream_id)
    assert meta is not None and meta.status == "queued" and meta.epoch is None
    assert await queued_jobs(redis, settings.job_partitions) == 1
    assert 0 < await redis.ttl(keys.meta(job.stream_id)) <= settings.meta_ttl_seconds


async def test_begin_writes_start_as_seq_1_of_a_new_epoch(redis: RedisClient, settings: Settings
                                                          ) -> None:
    store = StreamStore(redis, settings)
    attempt = await started(store)
    events = await store.read_events(attempt.stream_id, 0, 10)
    assert [(e.epoch, e.seq, e.type) for e in events] == [(attempt.epoch, 1, "start")]
    assert events[0].payload() == {"stream_id": attempt.stream_id, "model": "simulated",
                                   "epoch": attempt.epoch, "attempt": 1}


async def test_appends_are_numbered_and_the_text_matches_the_cursor(redis: RedisClient,
                                                                    settings: Settings) -> None:
    store = StreamStore(redis, settings)
    attempt = await started(store)
    await store.append(attempt, 2, [token("a\r\n"), token("🚀 ")], tokens_delta=2)
    await store.append(attempt, 4, [token("\x00z")], tokens_delta=1)
    snap = await store.snapshot(attempt.stream_id)
    assert snap is not None
    assert snap.text == "a\r\n🚀 \x00z"
    assert snap.meta.last_seq == 4 and snap.meta.tokens == 3
    entry_ids = [e for e, _ in await redis.xrange(keys.events(attempt.stream_id)) or []]
    assert entry_ids == ["1-0", "2-0", "3-0", "4-0"]


async def test_a_retried_append_is_not_written_twice(
    redis: RedisClient, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    attempt = await started(store)
    await store.append(attempt, 2, [token("once")])
    await store.append(attempt, 2, [token("once")])  # the reply was "lost": same seq again
    snap = await store.snapshot(attempt.stream_id)
    assert snap is not None and snap.text == "once" and snap.meta.last_seq == 2


async def test_a_seq_that_is_not_last_plus_one_is_refused(redis: RedisClient, settings: Settings
                                                          ) -> None:
    store = StreamStore(redis, settings)
    attempt = await started(store)
    with pytest.raises(StreamLost):  # Redis is behind the writer: it lost writes
        await store.append(attempt, 3, [token("gap")])
    await store.append(attempt, 2, [token("a")])
    with pytest.raises(SequenceConflict):  # overlaps what was written: refused, not merged
        await store.append(attempt, 2, [token("a"), token("b")])
    snap = await store.snapshot(attempt.stream_id)
    assert snap is not None and snap.text == "a"


async def test_a_superseded_attempt_is_fenced(redis: RedisClient, settings: Settings) -> None:
    store = StreamStore(redis, settings)
    old = await started(store)
    await store.append(old, 2, [token("old text")])
    new = await begin_attempt(store, old.stream_id, "w2")
    assert isinstance(new, Attempt) and new.attempt == 2 and new.epoch != old.epoch
    with pytest.raises(FencedWrite):
        await store.append(old, 3, [token("late write")])
    snap = await store.snapshot(old.stream_id)
    assert snap is not None
    assert snap.text == "" and snap.meta.epoch == new.epoch and snap.meta.last_seq == 1


async def test_terminal_event_ends_the_stream_and_sets_ttls(
    redis: RedisClient, settings_factory: SettingsFactory
) -> None:
    settings = settings_factory(events_ttl_seconds=5, meta_ttl_seconds=600)
    store = StreamStore(redis, settings)
    attempt = await started(store)
    done = dumps({"finish_reason": "stop", "tokens": 0})
    await store.append(attempt, 2, [PendingEvent("done", done)], final_status="done")
    meta = await store.meta(attempt.stream_id)
    assert meta is not None and meta.status == "done" and meta.final == {"finish_reason": "stop",
                                                                         "tokens": 0}
    assert 0 < await redis.ttl(keys.events(attempt.stream_id)) <= 5
    assert 5 < await redis.ttl(keys.meta(attempt.stream_id)) <= 600
    with pytest.raises(StreamNotRunning):
        await store.append(attempt, 3, [token("after the end")])
    # A retry of the terminal write itself (lost reply) is still acknowledged.
    await store.append(attempt, 2, [PendingEvent("done", done)], final_status="done")


async def test_cancel_of_a_queued_stream_ends_it_at_once(redis: RedisClient, settings: Settings
                                                         ) -> None:
    store = StreamStore(redis, settings)
    job = new_job()
    await store.create(job, None, "fp")
    assert (await store.cancel(job.stream_id)).status == "cancelled"
    assert (await store.cancel(job.stream_id)).status == "cancelled"  # idempotent
    events = await store.read_events(job.stream_id, 0, 10)
    assert [e.type for e in events] == ["start", "done"]
    assert events[0].payload()["model"] == "simulated"
    assert events[1].payload()["finish_reason"] == "cancelled"
    # The worker that later takes the job finds nothing to do.
    assert await begin_attempt(store, job.stream_id, "w1") == NoWork("cancelled")


async def test_cancel_of_a_running_stream_is_seen_by_its_next_append(redis: RedisClient,
                                                                     settings: Settings) -> None:
    store = StreamStore(redis, settings)
    attempt = await started(store)
    assert not (await store.append(attempt, 2, [token("a")])).cancel_requested
    assert (await store.cancel(attempt.stream_id)).status == "cancelling"
    assert (await store.append(attempt, 3, [token("b")])).cancel_requested


async def test_idempotency_key_returns_the_first_stream(
    redis: RedisClient, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    first = await store.create(new_job(), "order-17", "fp-a")
    again = await store.create(new_job(), "order-17", "fp-a")
    assert again == first
    assert await queued_jobs(redis, settings.job_partitions) == 1
    with pytest.raises(InvalidValue):
        await store.create(new_job(), "order-17", "fp-b")


async def test_a_full_queue_refuses_new_jobs_and_writes_nothing(
    redis: RedisClient, settings_factory: SettingsFactory
) -> None:
    settings = settings_factory(max_queue_length=1, job_partitions=1)
    store = StreamStore(redis, settings)
    await store.create(new_job(), None, "fp")
    job = new_job()
    with pytest.raises(OverLimit):
        await store.create(job, "key", "fp")
    assert await store.meta(job.stream_id) is None
    assert await queued_jobs(redis, settings.job_partitions) == 1
    assert await redis.get(keys.idempotency("key")) is None


async def test_append_many_writes_each_stream_and_reports_each_outcome(
    redis: RedisClient, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    first, second = await started(store), await started(store)
    outcomes = await store.append_many([(first, 2, [token("a")]), (second, 2, [token("b")]),
                                        (second, 9, [token("gap")])])
    assert outcomes[:2] == [False, False]
    assert isinstance(outcomes[2], StreamLost)
    texts = [(await store.snapshot(a.stream_id)).text for a in (first, second)]  # type: ignore[union-attr]
    assert texts == ["a", "b"]


# --- attempts: what begin decides ------------------------------------------------------


async def test_an_attempt_that_wrote_only_start_is_continued_without_reset(
    redis: RedisClient, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    first = await started(store)
    second = await begin_attempt(store, first.stream_id, "w2")
    assert isinstance(second, Attempt)
    assert second.epoch == first.epoch and second.attempt == 2 and second.last_seq == 1
    with pytest.raises(FencedWrite):  # the first attempt is still fenced off
        await store.append(first, 2, [token("late")])


async def test_continue_mode_keeps_the_epoch_and_its_text(
    redis: RedisClient, settings_factory: SettingsFactory
) -> None:
    store = StreamStore(redis, settings_factory(recovery_mode="continue"))
    first = await started(store)
    await store.append(first, 2, [token("Hello, ")], tokens_delta=2)
    second = await begin_attempt(store, first.stream_id, "w2")
    assert isinstance(second, Attempt)
    assert (second.epoch, second.last_seq, second.text, second.tokens) == (
        first.epoch, 2, "Hello, ", 2)
    await store.append(second, 3, [token("world")])
    snap = await store.snapshot(first.stream_id)
    assert snap is not None and snap.text == "Hello, world"


async def test_a_job_out_of_attempts_ends_its_stream_with_an_error(
    redis: RedisClient, settings_factory: SettingsFactory
) -> None:
    store = StreamStore(redis, settings_factory(max_attempts=2))
    job = new_job()
    await store.create(job, None, "fp")
    for owner in ("w1", "w2"):
        assert isinstance(await store.begin(job, "1-0", owner), Attempt)
    assert await store.begin(job, "1-0", "w3", last_failure="upstream_503") == Dead(2)
    meta = await store.meta(job.stream_id)
    assert meta is not None and meta.status == "error"
    assert meta.final is not None and meta.final["code"] == "upstream_503"
    events = await store.read_events(job.stream_id, 0, 10)
    assert [e.type for e in events] == ["start", "error"]


async def test_a_second_queue_entry_for_the_same_stream_does_not_run(
    redis: RedisClient, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    job = new_job()
    await started(store, job)
    assert await store.begin(job, "2-0", "w2") == NoWork("1-0")


async def test_a_lost_record_is_rebuilt_only_when_the_worker_says_so(
    redis: RedisClient, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    job = new_job()
    first = await started(store, job)
    await redis.flushall()  # Redis restarted empty
    with pytest.raises(StreamLost):
        await store.append(first, 2, [token("x")])
    assert await store.begin(job, "1-0", "w1") == NoWork("missing")
    rebuilt = await store.begin(job, "1-0", "w1", recreate=True)
    assert isinstance(rebuilt, Attempt) and rebuilt.epoch != first.epoch
    meta = await store.meta(job.stream_id)
    assert meta is not None and meta.status == "running" and meta.model == job.model


async def test_an_unwatched_stream_with_cancel_after_is_cancelled_at_its_next_write(
    redis: RedisClient, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    watched, unwatched = new_job(idle_cancel_ms=300), new_job(idle_cancel_ms=300)
    attempts = [await started(store, job) for job in (watched, unwatched)]
    await asyncio.sleep(0.4)
    await store.touch([watched.stream_id])
    assert not (await store.append(attempts[0], 2, [token("a")])).cancel_requested
    assert (await store.append(attempts[1], 2, [token("a")])).cancel_requested
