"""The job queue: ``tw:jobs`` with consumer group ``workers``.

A job is acknowledged (and deleted) only after its terminal event is written.
Entries whose consumer went quiet for ``claim_timeout_ms`` are reclaimed with
``XAUTOCLAIM``; a live worker refreshes the claim of every job it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tokenwire import keys
from tokenwire.jobs import Job


def is_missing_group(exc: ResponseError) -> bool:
    """Redis lost the consumer group (it restarted empty)."""
    return str(exc).startswith("NOGROUP")


@dataclass(frozen=True, slots=True)
class Delivery:
    entry_id: str
    job: Job | None  # None: the entry is unreadable (a poison pill); ack it away
    reclaimed: bool


class JobQueue:
    def __init__(self, redis: Redis, consumer: str, claim_timeout_ms: int) -> None:
        self._redis = redis
        self.consumer = consumer
        self._claim_timeout_ms = claim_timeout_ms
        self._autoclaim_cursor = "0-0"

    async def ensure_group(self) -> None:
        """Create the group (and stream); only ``BUSYGROUP`` (it exists) is tolerated."""
        try:
            await self._redis.xgroup_create(keys.JOBS, keys.WORKERS_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_new(self, count: int, block_ms: int) -> list[Delivery]:
        reply = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]] | None,
                     await self._redis.xreadgroup(
            keys.WORKERS_GROUP, self.consumer, {keys.JOBS: ">"}, count=count, block=block_ms
        ))
        return [self._delivery(eid, f, False) for _, entries in reply or [] for eid, f in entries]

    async def reclaim(self, count: int) -> list[Delivery]:
        """Take over jobs whose consumer has been idle past the claim timeout."""
        reply = await self._redis.xautoclaim(
            keys.JOBS, keys.WORKERS_GROUP, self.consumer,
            min_idle_time=self._claim_timeout_ms, start_id=self._autoclaim_cursor, count=count,
        )
        self._autoclaim_cursor = reply[0]
        return [self._delivery(eid, f, True) for eid, f in reply[1] if f is not None]

    async def refresh(self, entry_ids: list[str]) -> None:
        """Reset the idle time of jobs this worker still runs, so they are not stolen."""
        if entry_ids:
            await self._redis.xclaim(
                keys.JOBS, keys.WORKERS_GROUP, self.consumer, 0, cast(Any, entry_ids),
                justid=True,
            )

    async def release(self, entry_ids: list[str]) -> None:
        """Hand jobs back at once (shutdown): their idle time is set past the claim
        timeout, so the next ``reclaim`` of any worker takes them."""
        if entry_ids:
            await self._redis.xclaim(
                keys.JOBS, keys.WORKERS_GROUP, self.consumer, 0, cast(Any, entry_ids),
                idle=self._claim_timeout_ms * 2, justid=True,
            )

    async def ack(self, entry_id: str) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xack(keys.JOBS, keys.WORKERS_GROUP, entry_id)
                pipe.xdel(keys.JOBS, entry_id)
                await pipe.execute()
        except ResponseError as exc:
            if not is_missing_group(exc):  # Redis restarted empty: nothing left to ack
                raise

    @staticmethod
    def _delivery(entry_id: str, fields: dict[str, str], reclaimed: bool) -> Delivery:
        try:
            job = Job.model_validate_json(fields["job"])
        except (KeyError, ValueError):
            job = None
        return Delivery(entry_id, job, reclaimed)


async def queue_figures(redis: Redis) -> dict[str, float]:
    """How the queue stands, for the queue gauges: ``queue_jobs`` (not yet
    acknowledged), ``queue_running`` (taken by a worker), ``queue_waiting``
    (taken by none yet), ``dead_letters``."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(keys.JOBS)
        pipe.xlen(keys.DEAD_JOBS)
        jobs, dead = await pipe.execute()
    running, waiting = 0, int(jobs)
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(keys.JOBS)
    except ResponseError:  # no queue yet (no worker ever started)
        groups = []
    for group in groups:
        if group.get("name") == keys.WORKERS_GROUP:
            running = int(group.get("pending") or 0)
            lag = group.get("lag")
            waiting = int(lag) if lag is not None else max(int(jobs) - running, 0)
    return {"queue_jobs": float(jobs), "queue_running": float(running),
            "queue_waiting": float(waiting), "dead_letters": float(dead)}
