"""Redis calls a worker must not give up on while it holds a job.

A worker that holds a job keeps it through a Redis outage of any length up to
the job's deadline: every write of the attempt (and the ``begin`` and ``ack``
around it) is retried on transport errors, with backoff, until Redis answers.
Retrying is safe: appends are seq-checked (a re-applied batch is a
``duplicate``), ``begin`` is fenced by the job entry, ``XACK`` is idempotent.
If Redis comes back empty, the next append finds the record gone
(``StreamLost``) and the worker rebuilds it from the job it holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from tokenwire.redis_client import TRANSPORT_ERRORS

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY = 0.05
#: A failover (a new master in ~1-2 s) is noticed within this; a long outage
#: costs one cheap refused connect per job this often.
MAX_DELAY = 0.5


async def until_redis_answers(call: Callable[[], Awaitable[T]], give_up_at: float, what: str,
                              context: Mapping[str, object],
                              on_retry: Callable[[str], None] | None = None) -> T:
    """``await call()``, retried on transport errors until ``give_up_at``
    (``time.monotonic()``); then the last error is raised. ``on_retry(what)``
    is told of each retry (the worker counts them)."""
    delay = FIRST_DELAY
    failures = 0
    while True:
        try:
            result = await call()
        except TRANSPORT_ERRORS as exc:
            if time.monotonic() + delay > give_up_at:
                raise
            failures += 1
            if on_retry is not None:
                on_retry(what)
            level = logging.WARNING if failures == 1 else logging.DEBUG
            log.log(level, "%s failed, retrying until Redis answers: %s", what, exc,
                    extra=dict(context))
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
            continue
        if failures:
            log.info("%s went through after %d retries", what, failures, extra=dict(context))
        return result
