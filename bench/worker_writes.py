"""Worker write cost: Redis writes per model token with a given buffer.

Runs the real ``tokenwire worker`` (simulated provider at ``--rate`` tokens/s)
on ``--jobs`` concurrent jobs against the benchmark's Valkey, and counts, against
the tokens the jobs produced, the append-script calls (one per write of events)
and the worker's round trips: the socket reads Valkey processed
(``total_reads_processed``), less the benchmark's own."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from redis import Redis

from bench.harness import Child
from tokenwire import keys
from tokenwire.jobqueue import partition_for
from tokenwire.settings import Settings

#: The workers' default: the job partitions they read.
DEFAULT_PARTITIONS: int = Settings.model_fields["job_partitions"].default


def measure(redis_url: str, logs: Path, rate: float, jobs: int, buffer: str) -> dict[str, Any]:
    redis = Redis.from_url(redis_url, decode_responses=True)
    redis.flushall()
    redis.config_resetstat()
    ids = [keys.new_stream_id() for _ in range(jobs)]
    from tokenwire.jobs import Job  # noqa: PLC0415 - keep the module import light

    for stream_id in ids:
        job = Job(stream_id=stream_id, model="simulated", buffer=buffer,
                  messages=[{"role": "user", "content": f"bench {stream_id}"}],
                  created_at_ms=int(time.time() * 1000))
        redis.hset(keys.meta(stream_id), mapping=job.meta_fields())  # type: ignore[arg-type]
        partition = partition_for(stream_id, DEFAULT_PARTITIONS)
        redis.xadd(partition.stream, {"job": job.model_dump_json()})
    reads_before = _reads(redis)
    own_reads = 1  # the INFO that closes the count
    worker = Child(f"worker-{buffer}", ["-m", "tokenwire", "worker"], logs, {
        "TOKENWIRE_REDIS_URL": redis_url, "TOKENWIRE_PROVIDER": "simulated",
        "TOKENWIRE_SIMULATED_TOKENS_PER_SECOND": str(rate),
        "TOKENWIRE_SIMULATED_FIRST_TOKEN_DELAY_MS": "0", "TOKENWIRE_LOG_LEVEL": "WARNING",
        "TOKENWIRE_WORKER_CONCURRENCY": str(jobs)})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.2)
            pipe = redis.pipeline(transaction=False)  # one read event per poll
            for stream_id in ids:
                pipe.hget(keys.meta(stream_id), "status")
            own_reads += 1
            if all(s == "done" for s in pipe.execute()):
                break
        round_trips = _reads(redis) - reads_before - own_reads
        tokens = sum(int(redis.hget(keys.meta(i), "tokens") or 0) for i in ids)
        calls = int(redis.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
        begins = jobs  # one begin script per job; the rest are appends
    finally:
        worker.stop()
        redis.close()
    appends = calls - begins
    return {"buffer": buffer, "rate": rate, "jobs": jobs, "tokens": tokens, "writes": appends,
            "writes_per_token": round(appends / tokens, 3) if tokens else 0.0,
            "round_trips": round_trips,
            "round_trips_per_token": round(round_trips / tokens, 3) if tokens else 0.0}


def _reads(redis: Redis) -> int:
    return int(redis.info("stats")["total_reads_processed"])
