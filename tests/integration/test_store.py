"""The Redis data model and its scripts, against a real Valkey server."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from tests.conftest import make_settings
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
from tokenwire.settings import Settings
from tokenwire.store import Attempt, NoWork, PendingEvent, StreamStore


def token(content: str) -> PendingEvent:
    return PendingEvent("token", dumps({"content": content}), content)


async def started(store: StreamStore) -> Attempt:
    job = new_job()
    await store.create(job, None, "fp")
    attempt = await begin_attempt(store, job.stream_id, "w1")
    assert isinstance(attempt, Attempt)
    return attempt


async def test_create_records_a_queued_stream_and_enqueues_the_job(redis: Redis,
                                                                   settings: Settings) -> None:
    store = StreamStore(redis, settings)
    job = new_job()
    assert await store.create(job, None, "fp") == job.stream_id
    meta = await store.meta(job.stream_id)
    assert meta is not None and meta.status == "queued" and meta.epoch is None
    assert await redis.xlen(keys.JOBS) == 1
    assert 0 < await redis.ttl(keys.meta(job.stream_id)) <= settings.meta_ttl_seconds


async def test_begin_writes_start_as_seq_1_of_a_new_epoch(redis: Redis, settings: Settings
                                                          ) -> None:
    store = StreamStore(redis, settings)
    attempt = await started(store)
    events = await store.read_events(attempt.stream_id, 0, 10)
    assert [(e.epoch, e.seq, e.type) for e in events] == [(attempt.epoch, 1, "start")]
    assert events[0].payload() == {"stream_id": attempt.stream_id, "model": "simulated",
                                   "epoch": attempt.epoch, "attempt": 1}


async def test_appends_are_numbered_and_the_text_matches_the_cursor(redis: Redis,
                                                                    settings: Settings) -> None:
    store = StreamStore(redis, settings)
    attempt = await started(store)
    await store.append(attempt, 2, [token("a\r\n"), token("🚀 ")], tokens_delta=2)
    await store.append(attempt, 4, [token("\x00z")], tokens_delta=1)
    snap = await store.snapshot(attempt.stream_id)
    assert snap is not None
    assert snap.text == "a\r\n🚀 \x00z"
    assert snap.meta.last_seq == 4 and snap.meta.tokens == 3
    entry_ids = [e for e, _ in await redis.xrange(keys.events(attempt.stream_id))]
    assert entry_ids == ["1-0", "2-0", "3-0", "4-0"]


async def test_a_retried_append_is_not_written_twice(redis: Redis, settings: Settings) -> None:
    store = StreamStore(redis, settings)
    attempt = await started(store)
    await store.append(attempt, 2, [token("once")])
    await store.append(attempt, 2, [token("once")])  # the reply was "lost": same seq again
    snap = await store.snapshot(attempt.stream_id)
    assert snap is not None and snap.text == "once" and snap.meta.last_seq == 2


async def test_a_seq_that_is_not_last_plus_one_is_refused(redis: Redis, settings: Settings
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


async def test_a_superseded_attempt_is_fenced(redis: Redis, settings: Settings) -> None:
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


async def test_terminal_event_ends_the_stream_and_sets_ttls(redis: Redis, redis_url: str
                                                            ) -> None:
    settings = make_settings(redis_url, events_ttl_seconds=5, meta_ttl_seconds=600)
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


async def test_cancel_of_a_queued_stream_ends_it_at_once(redis: Redis, settings: Settings
                                                         ) -> None:
    store = StreamStore(redis, settings)
    job = new_job()
    await store.create(job, None, "fp")
    assert await store.cancel(job.stream_id) == "cancelled"
    assert await store.cancel(job.stream_id) == "cancelled"  # idempotent
    events = await store.read_events(job.stream_id, 0, 10)
    assert [e.type for e in events] == ["start", "done"]
    assert events[0].payload()["model"] == "simulated"
    assert events[1].payload()["finish_reason"] == "cancelled"
    # The worker that later takes the job finds nothing to do.
    assert await begin_attempt(store, job.stream_id, "w1") == NoWork("cancelled")


async def test_cancel_of_a_running_stream_is_seen_by_its_next_append(redis: Redis,
                                                                     settings: Settings) -> None:
    store = StreamStore(redis, settings)
    attempt = await started(store)
    assert await store.append(attempt, 2, [token("a")]) is False
    assert await store.cancel(attempt.stream_id) == "cancelling"
    assert await store.append(attempt, 3, [token("b")]) is True


async def test_idempotency_key_returns_the_first_stream(redis: Redis, settings: Settings) -> None:
    store = StreamStore(redis, settings)
    first = await store.create(new_job(), "order-17", "fp-a")
    again = await store.create(new_job(), "order-17", "fp-a")
    assert again == first
    assert await redis.xlen(keys.JOBS) == 1
    with pytest.raises(InvalidValue):
        await store.create(new_job(), "order-17", "fp-b")


async def test_a_full_queue_refuses_new_jobs_and_writes_nothing(redis: Redis,
                                                                redis_url: str) -> None:
    store = StreamStore(redis, make_settings(redis_url, max_queue_length=1))
    await store.create(new_job(), None, "fp")
    job = new_job()
    with pytest.raises(OverLimit):
        await store.create(job, "key", "fp")
    assert await store.meta(job.stream_id) is None
    assert await redis.xlen(keys.JOBS) == 1
    assert await redis.get(keys.idempotency("key")) is None


async def test_append_many_writes_each_stream_and_reports_each_outcome(
    redis: Redis, settings: Settings
) -> None:
    store = StreamStore(redis, settings)
    first, second = await started(store), await started(store)
    outcomes = await store.append_many([(first, 2, [token("a")]), (second, 2, [token("b")]),
                                        (second, 9, [token("gap")])])
    assert outcomes[:2] == [False, False]
    assert isinstance(outcomes[2], StreamLost)
    texts = [(await store.snapshot(a.stream_id)).text for a in (first, second)]  # type: ignore[union-attr]
    assert texts == ["a", "b"]
