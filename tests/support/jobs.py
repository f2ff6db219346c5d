"""What is in the job queue, over every partition (and the legacy stream)."""

from __future__ import annotations

from typing import Any, cast

from redis.exceptions import ResponseError

from tokenwire import keys
from tokenwire.jobqueue import partitions_of
from tokenwire.redis_client import RedisClient
from tokenwire.settings import Settings

DEFAULT_PARTITIONS: int = Settings.model_fields["job_partitions"].default


async def queued_jobs(redis: RedisClient, partitions: int = DEFAULT_PARTITIONS) -> int:
    """Entries in the job streams: queued or running, not yet acknowledged."""
    return sum([int(await redis.xlen(p.stream)) for p in partitions_of(partitions)])


async def pending_jobs(redis: RedisClient, partitions: int = DEFAULT_PARTITIONS
                       ) -> list[dict[str, Any]]:
    """Every job delivered to a worker and not yet acknowledged (``XPENDING``)."""
    found: list[dict[str, Any]] = []
    for partition in partitions_of(partitions):
        found += await pending_jobs_of(redis, partition.stream)
    return found


async def pending_jobs_of(redis: RedisClient, stream: str) -> list[dict[str, Any]]:
    """The jobs of one partition's stream delivered and not yet acknowledged."""
    try:
        return cast(list[dict[str, Any]], await redis.xpending_range(
            stream, keys.WORKERS_GROUP, "-", "+", 100))
    except ResponseError as exc:  # no group: the legacy stream of a new deployment
        if not str(exc).startswith("NOGROUP"):
            raise
        return []


async def pending_at_one_instant(redis: RedisClient, partitions: int,
                                 previous: set[tuple[str, str]]
                                 ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """Jobs certainly pending at one instant, and this read's pending ids to pass
    back in as ``previous`` next time.

    One read of every partition is not a snapshot: a job acknowledged on one
    partition and the next taken on a later one can both show up. A job is
    pending for one interval (delivered, then acknowledged), so one seen in two
    consecutive reads was pending at the instant between them: the
    intersection never over-counts.
    """
    now: set[tuple[str, str]] = set()
    for partition in partitions_of(partitions):  # entry ids are unique per stream only
        now |= {(partition.stream, entry["message_id"])
                for entry in await pending_jobs_of(redis, partition.stream)}
    return now & previous, now


async def dead_letters(redis: RedisClient, partitions: int = DEFAULT_PARTITIONS
                       ) -> list[dict[str, str]]:
    """Every partition's dead letters (fields of each entry)."""
    found: list[dict[str, str]] = []
    for partition in partitions_of(partitions):
        entries = cast(list[tuple[str, dict[str, str]]], await redis.xrange(partition.dead))
        found += [fields for _, fields in entries]
    return found
