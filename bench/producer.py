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
import json
import time
from pathlib import Path

from tokenwire.events import dumps
from tokenwire.jobs import Job
from tokenwire.redis_client import create_redis
from tokenwire.settings import Settings
from tokenwire.store import Attempt, PendingEvent, StreamStore

SLOT = 0.001


def token_now() -> PendingEvent:
    content = f"t{time.time_ns()} "
    return PendingEvent("token", dumps({"content": content}), content)


async def run(redis_url: str, ids: list[str], rate: float, seconds: float, done: bool) -> dict:
    settings = Settings(_env_file=None, redis_url=redis_url)  # type: ignore[call-arg]
    redis = create_redis(settings, "bench-producer")
    store = StreamStore(redis, settings)
    attempts: list[Attempt] = []
    for stream_id in ids:
        job = Job(stream_id=stream_id, messages=[{"role": "user", "content": "bench"}],
                  model="bench", buffer="none", created_at_ms=0)
        await store.create(job, None, "bench")
        began = await store.begin(job, f"bench-{stream_id}", "bench-producer")
        assert isinstance(began, Attempt)
        attempts.append(began)
    await redis.delete("tw:jobs")  # nobody works these; keep the queue clean
    seqs = [2] * len(ids)
    period = 1.0 / rate if rate > 0 else float("inf")
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5
    due = [start + period * i / max(1, len(ids)) for i in range(len(ids))]
    appended = 0
    end = start + seconds
    while loop.time() < end:
        now = loop.time()
        ready = [i for i, t in enumerate(due) if t <= now]
        if ready:
            writes = [(attempts[i], seqs[i], [token_now()]) for i in ready]
            await store.append_many(writes)
            for i in ready:
                seqs[i] += 1
                due[i] += period
            appended += len(ready)
        await asyncio.sleep(SLOT)
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
    args = parser.parse_args()
    ids = args.ids.read_text().split()
    result = asyncio.run(run(args.redis_url, ids, args.rate, args.seconds, args.done))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
