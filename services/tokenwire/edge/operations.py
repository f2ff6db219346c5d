"""What the operator's console reads and does, from Redis: live streams with
their viewers on every edge, dead letters and their replay, per-key usage.

Everything here is read on request (the console polls); nothing is kept in the
edge. Listing streams also opens the viewer census (``census``) for a few
seconds: while a console is open, every edge reports its viewers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, cast

from pydantic import ValidationError

from tokenwire import keys
from tokenwire.apikeys import LIMIT_FIELDS, KeyStore
from tokenwire.errors import NotFound
from tokenwire.jobqueue import Partition, dead_letter_of, partitions_of
from tokenwire.jobs import Job
from tokenwire.limits import TOKEN_WINDOW_MS
from tokenwire.redis_client import RedisClient
from tokenwire.redis_clock import RedisClock
from tokenwire.store import TERMINAL_STATUSES, StreamStore

log = logging.getLogger(__name__)

#: How long an open console keeps edges reporting after its last poll.
CONSOLE_OPEN_MS = 10_000
#: An edge whose last report is older than this is not listed.
EDGE_STALE_MS = 10_000
_META_FIELDS = ("status", "tenant", "key_id", "model", "tokens", "attempt", "epoch",
                "last_seq", "created_at", "started_at", "attempt_started_at",
                "last_append_at", "conversation", "cancel")


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


async def edges(redis: RedisClient) -> list[dict[str, Any]]:
    """The edges that reported recently, with their census."""
    now_ms = int(time.time() * 1000)
    await redis.zremrangebyscore(keys.EDGES, "-inf", now_ms - EDGE_STALE_MS)
    edge_ids = cast(list[str], await redis.zrangebyscore(keys.EDGES, now_ms - EDGE_STALE_MS,
                                                         "+inf"))
    reports = []
    for edge_id in edge_ids:  # one key per edge: separate slots under Cluster
        raw = cast(str | None, await redis.get(keys.edge_report(edge_id)))
        if raw is not None:
            reports.append(json.loads(raw))
    return sorted(reports, key=lambda report: str(report.get("address")))


async def live_streams(redis: RedisClient, clock: RedisClock, limit: int) -> dict[str, Any]:
    """Unfinished streams (newest first, at most ``limit``) with their figures
    and viewers across edges; opens the census for ``CONSOLE_OPEN_MS``."""
    await redis.set(keys.CONSOLE_OPEN, "1", px=CONSOLE_OPEN_MS)
    listed = cast(list[tuple[str, float]], await redis.zrevrange(
        keys.ACTIVE_STREAMS, 0, limit - 1, withscores=True))
    total = int(await redis.zcard(keys.ACTIVE_STREAMS))
    async with redis.pipeline(transaction=False) as pipe:
        for stream_id, _ in listed:
            pipe.hmget(keys.meta(stream_id), list(_META_FIELDS))
        metas = cast(list[list[str | None]], await pipe.execute())
    reports = await edges(redis)
    viewers: dict[str, int] = {}
    for report in reports:
        for stream_id, count in report.get("viewers", {}).items():
            viewers[stream_id] = viewers.get(stream_id, 0) + int(count)
    now_us = clock.now_us()
    now_ms = now_us / 1000
    streams, ended = [], []
    for (stream_id, _), values in zip(listed, metas, strict=True):
        meta = dict(zip(_META_FIELDS, values, strict=True))
        if meta["status"] is None or meta["status"] in TERMINAL_STATUSES:
            ended.append(stream_id)  # ended without being unlisted (a crash): heal
            continue
        streams.append(_row(stream_id, meta, now_ms, now_us, viewers.get(stream_id, 0)))
    if ended:
        await redis.zrem(keys.ACTIVE_STREAMS, *ended)
    return {"now_ms": int(now_ms), "total": total - len(ended), "streams": streams,
            "edges": reports}


def _row(stream_id: str, meta: dict[str, str | None], now_ms: float, now_us: float,
         viewers: int) -> dict[str, Any]:
    tokens = _int(meta["tokens"]) or 0
    created = _int(meta["created_at"])
    attempt_started = _int(meta["attempt_started_at"])
    last_append = _int(meta["last_append_at"])
    running_for = (now_ms - attempt_started) / 1000 if attempt_started else None
    return {
        "id": stream_id, "status": meta["status"], "tenant": meta["tenant"],
        "key_id": meta["key_id"], "model": meta["model"], "tokens": tokens,
        "attempt": _int(meta["attempt"]) or 0, "conversation": meta["conversation"],
        "cancelling": meta["cancel"] == "1", "created_at_ms": created,
        "queued_for_ms": round(now_ms - created) if created and meta["status"] == "queued"
        else None,
        "tokens_per_second": round(tokens / running_for, 1) if running_for else None,
        # how long its viewers have waited for the next event (Redis' clock)
        "lag_ms": round((now_us - last_append) / 1000) if last_append else None,
        "viewers": viewers,
    }


async def dead_letters(redis: RedisClient, partitions: int, limit: int
                       ) -> list[dict[str, Any]]:
    """The newest dead letters over every partition (and the legacy stream),
    newest first: what failed and whether it was replayed (never the prompt:
    an operator sees figures, not a tenant's text)."""
    per_partition = await asyncio.gather(*(_dead_letters_of(redis, partition, limit)
                                           for partition in partitions_of(partitions)))
    merged = [row for rows in per_partition for row in rows]
    merged.sort(key=lambda row: row["at_ms"] or 0, reverse=True)
    return merged[:limit]


async def _dead_letters_of(redis: RedisClient, partition: Partition, limit: int
                           ) -> list[dict[str, Any]]:
    entries = cast(list[tuple[str, dict[str, str]]],
                   await redis.xrevrange(partition.dead, count=limit))
    replays: list[str | None] = []
    if entries:
        replays = cast(list[str | None], await redis.hmget(
            partition.replays, [entry_id for entry_id, _ in entries]))
    listed = []
    for (entry_id, fields), replayed_as in zip(entries, replays, strict=True):
        job = _job_of(fields)
        listed.append({
            "id": partition.dead_letter_id(entry_id), "stream_id": fields.get("stream_id"),
            "reason": fields.get("reason"), "at_ms": _int(fields.get("at")),
            "tenant": job.tenant if job else None, "key_id": job.key_id if job else None,
            "model": job.model if job else None, "replayed_as": replayed_as,
        })
    return listed


def _job_of(fields: dict[str, str]) -> Job | None:
    try:
        return Job.model_validate_json(fields.get("job", ""))
    except ValidationError:
        return None


async def replay(redis: RedisClient, store: StreamStore, dead_letter_id: str,
                 partitions: int, trace: dict[str, str] | None) -> tuple[str, bool]:
    """Run a dead-lettered job again, as a new stream (the old one ended with
    its ``error``, and a terminal event is final), queued on the dead letter's
    own partition (its new stream id is drawn to hash there). Idempotent: a
    dead letter is replayed once (recorded beside it, in its partition's
    slot); asking again answers the same stream (``False``: it existed). A
    conversation's turn is replayed as a plain stream (its conversation moved
    on). Not counted against the key's limits: an operator's decision; the
    queue limit applies."""
    if (found := dead_letter_of(dead_letter_id, partitions)) is None:
        raise NotFound("not_found", "no dead letter with this id")
    partition, entry_id = found
    if (existing := cast(str | None, await redis.hget(partition.replays, entry_id))):
        return existing, False
    entries = cast(list[tuple[str, dict[str, str]]],
                   await redis.xrange(partition.dead, min=entry_id, max=entry_id))
    job = _job_of(entries[0][1]) if entries else None
    if job is None:
        raise NotFound("not_found", "no dead letter with this id")
    again = job.model_copy(update={
        "stream_id": _stream_id_in(partition, partitions),
        "created_at_ms": int(time.time() * 1000), "conversation": None, "trace": trace})
    if not await redis.hsetnx(partition.replays, entry_id, again.stream_id):
        winner = cast(str, await redis.hget(partition.replays, entry_id))
        return winner, False  # a concurrent replay won
    try:
        await store.create(again, None, "")
    except BaseException:
        await redis.hdel(partition.replays, entry_id)  # not replayed: may be asked again
        raise
    return again.stream_id, True


def _stream_id_in(partition: Partition, partitions: int) -> str:
    """A new stream id whose job goes to ``partition`` (any, for the legacy
    stream): ``partitions`` draws on average."""
    while True:
        stream_id = keys.new_stream_id()
        if partition.index is None or keys.job_partition_of(stream_id, partitions) == \
                partition.index:
            return stream_id


async def usage(redis: RedisClient, key_store: KeyStore) -> list[dict[str, Any]]:
    """Every API key with its limits and what it uses now, across all edges."""
    records = await key_store.list()
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        for record in records:
            kid = record.key_id
            pipe.zcount(keys.key_running(kid), now_ms, "+inf")
            pipe.zcount(keys.key_requests(kid), now_ms - 60_000, "+inf")
            pipe.get(keys.key_tokens(kid))
            pipe.zcount(keys.key_connections(kid), now_ms, "+inf")
        counts = await pipe.execute()
    rows = []
    for index, record in enumerate(records):
        running, requests, tokens, connections = counts[4 * index: 4 * index + 4]
        used = {"max_running": int(running), "requests_per_minute": int(requests),
                "tokens_per_minute": int(tokens or 0), "max_connections": int(connections)}
        rows.append({
            "key_id": record.key_id, "tenant": record.tenant,
            "limits": {name: getattr(record, name) for name in LIMIT_FIELDS},
            "used": used, "token_window_ms": TOKEN_WINDOW_MS,
        })
    return rows
