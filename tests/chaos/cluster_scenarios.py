"""Faults of a Valkey Cluster (3 masters, a replica each; edges and workers in
cluster mode): a slot migration mid-stream, a manual ``CLUSTER FAILOVER`` and a
master killed with kill -9, each while streams are live on every shard and
jobs wait in the queue.

Every client must end with the exact text, or a ``reset`` and then the whole
answer; streams on other shards must not notice; no job may be lost. Each
scenario also records how long the streams live at the fault went without
delivering anything: those the fault hit, and the others.
"""

from __future__ import annotations

import asyncio
import time

from redis.crc import key_slot

from tests.chaos.run import Run, silence_after
from tests.chaos.scenario import Scenario
from tests.support.jobs import DEFAULT_PARTITIONS, queued_jobs
from tests.support.valkey_cluster import ClusterNode, ValkeyCluster
from tests.support.waiting import eventually
from tokenwire import keys
from tokenwire.jobqueue import partitions_of

#: A worker whose claim cannot be refreshed during a failover (~2 s) must not
#: lose its jobs to another (production's default is 30 s).
SETTINGS = {"TOKENWIRE_WORKER_CLAIM_TIMEOUT_MS": "6000", "TOKENWIRE_WORKER_CONCURRENCY": "3"}


def redis_cluster(run: Run) -> ValkeyCluster:
    cluster = run.cluster.redis_cluster
    assert cluster is not None, "a cluster scenario runs on a Valkey Cluster"
    return cluster


def master_of(run: Run, stream_id: str) -> ClusterNode:
    return redis_cluster(run).node_of_slot(key_slot(keys.meta(stream_id).encode()))


async def streams_on_every_shard(run: Run, count: int) -> list[str]:
    """``count`` streams of ~2 s (more than the workers' 6 slots: some wait in
    the queue), two clients each, once the first is generating."""
    streams = [await run.create(run.prompt("#delay=30"), edge=i % 2) for i in range(count)]
    for stream_id in streams:
        run.watch(stream_id, 2, drop=0.0)
    shards = {master_of(run, stream_id).port for stream_id in streams}
    run.require(len(shards) == 3, f"streams on {len(shards)} shards only")
    await run.cluster.owner(streams[0], min_seq=5)
    return streams


async def finish_and_measure(run: Run, streams: list[str], hit: list[str], fault_at: float,
                             max_resets: int) -> None:
    await run.finish(max_resets=max_resets)
    others = [s for s in streams if s not in hit]
    for what, group in (("hit", hit), ("others", others)):
        silence = silence_after(run.records, fault_at, group)
        if silence is not None:
            run.outcome.recovery[what] = silence
    # A stream on another shard pauses only as long as its normal pace (30 ms a chunk).
    # (None: no stream on another shard was still live at the fault.)
    untouched = run.outcome.recovery.get("others")
    if untouched is not None:
        run.require(untouched < 0.5, f"streams on other shards went silent for {untouched:.2f} s")
    async def none_left() -> bool:  # every job acknowledged: none lost, none left
        return await queued_jobs(run.cluster.redis) == 0

    await eventually(none_left, 10)


async def slot_migration(run: Run) -> None:
    """Slots of running streams, and of job partitions holding queued jobs, move
    to another master: ``SETSLOT … MIGRATING/IMPORTING``, ``MIGRATE … KEYS``,
    ``SETSLOT … NODE``."""
    cluster = redis_cluster(run)
    streams = await streams_on_every_shard(run, 12)
    target = cluster.node_of_slot(16383)  # the third master, at the start
    moving = [s for s in streams if master_of(run, s) is not target][:3]
    waiting = [p.stream for p in partitions_of(DEFAULT_PARTITIONS)
               if await run.cluster.redis.xlen(p.stream) and
               cluster.node_of_slot(key_slot(p.stream.encode())) is not target][:2]
    slots = sorted({key_slot(keys.meta(s).encode()) for s in moving}
                   | {key_slot(stream.encode()) for stream in waiting})
    fault_at = time.monotonic()
    for slot in slots:
        await asyncio.to_thread(cluster.migrate_slot, slot, target)
    run.fault(f"{len(slots)} slots migrated to {target.name} mid-stream "
              f"({len(moving)} running streams, {len(waiting)} job partitions with jobs)")
    await finish_and_measure(run, streams, moving, fault_at, max_resets=0)


async def manual_failover(run: Run) -> None:
    """The replica of a master with live streams takes over (``CLUSTER
    FAILOVER``: the master agrees, no write is lost)."""
    cluster = redis_cluster(run)
    streams = await streams_on_every_shard(run, 12)
    master = master_of(run, streams[0])
    hit = [s for s in streams if master_of(run, s) is master]
    fault_at = time.monotonic()
    promoted = await asyncio.to_thread(cluster.failover, master)
    run.fault(f"CLUSTER FAILOVER: {promoted.name} took over from {master.name} "
              f"({len(hit)} streams)")
    await finish_and_measure(run, streams, hit, fault_at, max_resets=0)


async def master_killed(run: Run) -> None:
    """kill -9 of a master with live streams: its replica is elected after the
    node timeout (1 s); writes it had not replicated are lost, so a client
    may get a ``reset`` and then the whole answer."""
    streams = await streams_on_every_shard(run, 12)
    master = master_of(run, streams[0])
    hit = [s for s in streams if master_of(run, s) is master]
    fault_at = time.monotonic()
    master.kill()
    run.fault(f"kill -9 master {master.name} ({len(hit)} streams)")
    await finish_and_measure(run, streams, hit, fault_at, max_resets=1)


CLUSTER_SCENARIOS = (
    Scenario("cluster-slot-migration", "#13 slots migrated mid-stream", slot_migration,
             settings=SETTINGS, valkey_cluster=True),
    Scenario("cluster-manual-failover", "#13 CLUSTER FAILOVER mid-stream", manual_failover,
             settings=SETTINGS, valkey_cluster=True),
    Scenario("cluster-master-killed", "#13 kill -9 of a master with live streams",
             master_killed, fast=True, settings=SETTINGS, valkey_cluster=True),
)
