"""Append timestamped token events to N streams at R tokens/s each.

Streams tick in staggered phases (not all at once), and one pipelined round
trip carries every append due in a 1 ms slot. An event is stamped when its
slot is built, so a wider slot would add its packing time to the latency
measured (5 ms slots added ~5 ms to p50 and ~20 ms to p99 at 10k appends/s).
With ``--done`` each stream ends with a ``done`` event when the run is over.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import time
from pathlib import Path
from typing import Any

from tokenwire.errors import WriteRejected
from tokenwire.events import dumps
from tokenwire.jobqueue import partitions_of
from tokenwire.jobs import Job
from tokenwire.redis_client import create_redis
from tokenwire.settings import Settings
from tokenwire.store import Attempt, PendingEvent, StreamStore

SLOT = 0.001
CREATE_CONCURRENCY = 200


async def _running_stream(store: StreamStore, stream_id: str) -> Attempt:
    job = Job(stream_id=stream_id, messages=[{"role": "user", "content": "bench"}],
              model="bench", buffer="none", created_at_ms=0)
    await store.create(job, None, "bench")
    began = await store.begin(job, f"bench-{stream_id}", "bench-producer")
    assert isinstance(began, Attempt)
    return began


def token_now() -> PendingEvent:
    content = f"t{time.time_ns()} "
    return PendingEvent("token", dumps({"content": content}), content)


async def run(redis_url: str, ids: list[str], *, rate: float, seconds: float, done: bool,
              ready: Path, redis_mode: str = "standalone") -> dict[str, Any]:
    # Nobody works the producer's jobs (they are deleted once created), so the
    # queue limit — split over the job partitions, each a share of it — must
    # not refuse the idle scenario's 10k: it is not what the bench measures.
    settings = Settings(_env_file=None, redis_url=redis_url, redis_mode=redis_mode,
                        max_queue_length=max(10_000, 4 * len(ids)))
    redis = create_redis(settings, "bench-producer")
    store = StreamStore(redis, settings)
    attempts: list[Attempt] = []
    for first in range(0, len(ids), CREATE_CONCURRENCY):
        chunk = ids[first:first + CREATE_CONCURRENCY]
        attempts += await asyncio.gather(*(_running_stream(store, i) for i in chunk))
    for partition in partitions_of(settings.job_partitions):  # nobody works these jobs
        await redis.delete(partition.stream)
    # Clients may connect now: every stream exists.
    await asyncio.to_thread(ready.write_text, str(len(attempts)))
    seqs = [2] * len(ids)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5
    end = start + seconds
    appended = 0
    if rate > 0:
        period = 1.0 / rate
        # (when, stream index): each slot pops only the streams that are due.
        schedule = [(start + period * i / len(ids), i) for i in range(len(ids))]
        heapq.heapify(schedule)
        while loop.time() < end:
            now = loop.time()
            popped = []
            while schedule and schedule[0][0] <= now:
                popped.append(heapq.heappop(schedule))
            for when, i in popped:  # after popping: a stream behind by 2 periods
                heapq.heappush(schedule, (when + period, i))  # is due once per slot
            due_now = [i for _, i in popped]
            if due_now:
                outcomes = await store.append_many(
                    [(attempts[i], seqs[i], [token_now()]) for i in due_now])
                if refused := [o for o in outcomes if isinstance(o, WriteRejected)]:
                    raise RuntimeError(f"appends refused: {refused[:3]}")
                for i in due_now:
                    seqs[i] += 1
                appended += len(due_now)
            await asyncio.sleep(SLOT)
    else:  # idle streams: nothing to append
        await asyncio.sleep(end - loop.time())
    if done:
        for attempt, seq in zip(attempts, seqs, strict=True):
            await store.append(attempt, seq, [PendingEvent("done", dumps(
                {"finish_reason": "stop", "tokens": seq - 2}))], final_status="done")
    await redis.aclose()
    return {"appended": appended, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--ids", type=Path, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--done", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True, help="written once streams exist")
    parser.add_argument("--redis-mode", default="standalone", choices=["standalone", "cluster"])
    args = parser.parse_args()
    ids = args.ids.read_text().split()
    result = asyncio.run(run(args.redis_url, ids, rate=args.rate, seconds=args.seconds,
                             done=args.done, ready=args.ready, redis_mode=args.redis_mode))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
