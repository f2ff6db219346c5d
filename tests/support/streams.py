"""Jobs and attempts for tests that drive the store directly."""

from __future__ import annotations

import time

from tokenwire import keys
from tokenwire.jobs import Job
from tokenwire.store import Attempt, Dead, NoWork, StreamStore


def new_job(prompt: str = "hello", stream_id: str | None = None, **fields: object) -> Job:
    return Job(stream_id=stream_id or keys.new_stream_id(),
               messages=[{"role": "user", "content": prompt}], model="simulated",
               buffer="none", created_at_ms=int(time.time() * 1000), **fields)


async def begin_attempt(store: StreamStore, stream_id: str, owner: str,
                        entry: str = "1-0") -> Attempt | Dead | NoWork:
    """What a worker that took the job (queue entry ``entry``) does first."""
    return await store.begin(new_job(stream_id=stream_id), entry, owner)
