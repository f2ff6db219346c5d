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
        try:
            found += cast(list[dict[str, Any]], await redis.xpending_range(
                partition.stream, keys.WORKERS_GROUP, "-", "+", 100))
        except ResponseError as exc:  # no group: the legacy stream of a new deployment
            if not str(exc).startswith("NOGROUP"):
                raise
    return found


async def dead_letters(redis: RedisClient, partitions: int = DEFAULT_PARTITIONS
                       ) -> list[dict[str, str]]:
    """Every partition's dead letters (fields of each entry)."""
    found: list[dict[str, str]] = []
    for partition in partitions_of(partitions):
        entries = cast(list[tuple[str, dict[str, str]]], await redis.xrange(partition.dead))
        found += [fields for _, fields in entries]
    return found
