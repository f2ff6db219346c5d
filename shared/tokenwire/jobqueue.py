"""The job queue: ``job_partitions`` streams (``tw:jobs:{p<n>-<salt>}``), each with
the consumer group ``workers``, spread over a cluster's slots — one stream
would be one hot slot for the whole cluster.

A job goes to the partition its stream id names (``keys.job_partition_of``),
checked against the partition's length limit in the same script that adds it
(``enqueue.lua``), which also wakes idle workers (``keys.JOBS_WAKE_CHANNEL``).
Every operation here touches one partition, so one slot: a cluster refuses a
multi-stream ``XREADGROUP`` across slots, and a blocking read per partition
would hold a connection per partition. Workers read a partition when it was
woken, and every partition now and then (``intake``).

A job is acknowledged (and deleted) only after its terminal event is written.
Entries whose consumer went quiet for ``claim_timeout_ms`` are reclaimed with
``XAUTOCLAIM``; a live worker refreshes the claim of every job it runs. The
single ``tw:jobs`` stream of earlier versions is drained too, as one more
partition, so an upgrade loses no queued job.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from redis.exceptions import ResponseError

from tokenwire import keys
from tokenwire.jobs import Job
from tokenwire.redis_client import RedisClient


def is_missing_group(exc: ResponseError) -> bool:
    """Redis lost the consumer group (it restarted empty)."""
    return str(exc).startswith("NOGROUP")


@dataclass(frozen=True, slots=True)
class Partition:
    """One job stream and its dead letters (one slot); ``index`` is None for
    the legacy ``tw:jobs``."""

    stream: str
    dead: str
    replays: str  # which of ``dead`` were replayed, as what (``edge.operations``)
    index: int | None

    @classmethod
    def numbered(cls, index: int, partitions: int) -> Partition:
        return cls(keys.job_stream(index, partitions), keys.dead_jobs(index, partitions),
                   keys.dead_replays(index, partitions), index)

    def dead_letter_id(self, entry_id: str) -> str:
        """A dead letter's id for operators, unique across partitions:
        ``<partition>:<entry id>``, or the bare entry id in the legacy stream."""
        return entry_id if self.index is None else f"{self.index}:{entry_id}"


LEGACY = Partition(keys.LEGACY_JOBS, keys.LEGACY_DEAD_JOBS, keys.DEAD_REPLAYS, None)
#: ``[<partition>:]<ms>-<seq>``, ASCII digits only (``\d`` takes "²", which
#: ``int`` refuses). The OpenAPI document's pattern for it says the same.
_DEAD_LETTER_ID = re.compile(r"^(?:([0-9]{1,3}):)?(([0-9]{1,20})-([0-9]{1,20}))$")
_MOST_ENTRY_PART = 2**64 - 1  # each half of a Redis stream id is an unsigned 64-bit integer


def dead_letter_of(dead_letter_id: str, count: int) -> tuple[Partition, str] | None:
    """The partition and entry id a dead letter's id names (``dead_letter_id``);
    None for anything else — a partition beyond ``count``, or an entry id Redis
    would refuse (a half beyond 64 bits) — included."""
    if (match := _DEAD_LETTER_ID.fullmatch(dead_letter_id)) is None:
        return None
    index, entry_id, milliseconds, sequence = match.groups()
    if int(milliseconds) > _MOST_ENTRY_PART or int(sequence) > _MOST_ENTRY_PART:
        return None
    if index is None:
        return LEGACY, entry_id
    return (Partition.numbered(int(index), count), entry_id) if int(index) < count else None


def partitions_of(count: int) -> list[Partition]:
    """The ``count`` partitions, then the legacy stream."""
    return [Partition.numbered(index, count) for index in range(count)] + [LEGACY]


def partition_for(stream_id: str, count: int) -> Partition:
    return Partition.numbered(keys.job_partition_of(stream_id, count), count)


def partition_limit(max_queue_length: int, count: int) -> int:
    """Each partition holds its share of ``max_queue_length`` (rounded up): a
    limit across partitions could not be checked atomically in a cluster."""
    return math.ceil(max_queue_length / count)


@dataclass(frozen=True, slots=True)
class Delivery:
    partition: Partition
    entry_id: str
    job: Job | None  # None: the entry is unreadable (a poison pill); ack it away
    reclaimed: bool

    @property
    def ref(self) -> str:
        """Unique across partitions (two streams may hand out the same entry id)."""
        return f"{self.partition.stream} {self.entry_id}"


class JobQueue:
    def __init__(self, redis: RedisClient, consumer: str, claim_timeout_ms: int,
                 partitions: int) -> None:
        self._redis = redis
        self.consumer = consumer
        self._claim_timeout_ms = claim_timeout_ms
        self.partitions = partitions_of(partitions)
        self._autoclaim_cursors: dict[Partition, str] = {}

    async def ensure_groups(self) -> None:
        """Create each partition's group (and stream); only ``BUSYGROUP`` (it
        exists) is tolerated. The legacy stream's group is created only if the
        stream exists: a new deployment never gets one."""
        for partition in self.partitions:
            await self.ensure_group(partition)

    async def ensure_group(self, partition: Partition) -> None:
        legacy = partition.index is None
        try:
            await self._redis.xgroup_create(partition.stream, keys.WORKERS_GROUP, id="0",
                                            mkstream=not legacy)
        except ResponseError as exc:
            absent = legacy and "requires the key to exist" in str(exc)
            if "BUSYGROUP" not in str(exc) and not absent:
                raise

    async def read_new(self, partition: Partition, count: int) -> list[Delivery]:
        """Up to ``count`` new jobs of one partition, without blocking. The
        legacy stream without a group (absent, or lost in an empty restart)
        reads as empty."""
        try:
            reply = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]] | None,
                         await self._redis.xreadgroup(
                             keys.WORKERS_GROUP, self.consumer, {partition.stream: ">"},
                             count=count))
        except ResponseError as exc:
            if partition.index is None and is_missing_group(exc):
                return []
            raise
        return [self._delivery(partition, eid, f, False)
                for _, entries in reply or [] for eid, f in entries]

    async def reclaim(self, partition: Partition, count: int) -> list[Delivery]:
        """Take over jobs of one partition whose consumer has been idle past the
        claim timeout."""
        try:
            reply = await self._redis.xautoclaim(
                partition.stream, keys.WORKERS_GROUP, self.consumer,
                min_idle_time=self._claim_timeout_ms,
                start_id=self._autoclaim_cursors.get(partition, "0-0"), count=count)
        except ResponseError as exc:
            if partition.index is None and is_missing_group(exc):
                return []
            raise
        self._autoclaim_cursors[partition] = reply[0]
        return [self._delivery(partition, eid, f, True) for eid, f in reply[1] if f is not None]

    async def refresh(self, deliveries: Iterable[Delivery]) -> None:
        """Reset the idle time of jobs this worker still runs, so they are not
        stolen."""
        await self._claim(deliveries, idle=None)

    async def release(self, deliveries: Iterable[Delivery]) -> None:
        """Hand jobs back at once (shutdown): their idle time is set past the claim
        timeout, so the next ``reclaim`` of any worker takes them."""
        await self._claim(deliveries, idle=self._claim_timeout_ms * 2)

    async def _claim(self, deliveries: Iterable[Delivery], idle: int | None) -> None:
        """One ``XCLAIM`` per partition, all at once, each on its own: in a
        cluster, a master failing over must not keep the others' jobs from
        being refreshed (one pipeline fails whole). Raises the first failure
        once every partition was tried."""
        by_partition: dict[Partition, list[str]] = defaultdict(list)
        for delivery in deliveries:
            by_partition[delivery.partition].append(delivery.entry_id)
        outcomes = await asyncio.gather(*(
            self._redis.xclaim(partition.stream, keys.WORKERS_GROUP, self.consumer, 0,
                               cast(Any, entry_ids), idle=idle, justid=True)
            for partition, entry_ids in by_partition.items()), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def ack(self, delivery: Delivery) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:  # one slot
                pipe.xack(delivery.partition.stream, keys.WORKERS_GROUP, delivery.entry_id)
                pipe.xdel(delivery.partition.stream, delivery.entry_id)
                await pipe.execute()
        except ResponseError as exc:
            if not is_missing_group(exc):  # Redis restarted empty: nothing left to ack
                raise

    @staticmethod
    def _delivery(partition: Partition, entry_id: str, fields: dict[str, str],
                  reclaimed: bool) -> Delivery:
        try:
            job = Job.model_validate_json(fields["job"])
        except (KeyError, ValueError):
            job = None
        return Delivery(partition, entry_id, job, reclaimed)


async def queue_figures(redis: RedisClient, partitions: int) -> dict[str, float]:
    """How the queue stands, for the queue gauges, summed over every partition
    (and the legacy stream): ``queue_jobs`` (not yet acknowledged),
    ``queue_running`` (taken by a worker), ``queue_waiting`` (taken by none
    yet), ``dead_letters``. One round trip per partition, all at once."""
    figures = await asyncio.gather(*(_partition_figures(redis, partition)
                                     for partition in partitions_of(partitions)))
    return {name: float(sum(f[name] for f in figures))
            for name in ("queue_jobs", "queue_running", "queue_waiting", "dead_letters")}


async def _partition_figures(redis: RedisClient, partition: Partition) -> dict[str, int]:
    async with redis.pipeline(transaction=False) as pipe:  # one slot
        pipe.xlen(partition.stream)
        pipe.xlen(partition.dead)
        jobs, dead = (int(n) for n in await pipe.execute())
    running, waiting = 0, jobs
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(partition.stream)
    except ResponseError:  # no queue yet (no worker ever started; the legacy stream)
        groups = []
    for group in groups:
        if group.get("name") == keys.WORKERS_GROUP:
            running = int(group.get("pending") or 0)
            lag = group.get("lag")
            waiting = int(lag) if lag is not None else max(jobs - running, 0)
    return {"queue_jobs": jobs, "queue_running": running, "queue_waiting": waiting,
            "dead_letters": dead}
