"""Which job partitions a worker reads, and when.

Reads never block: a cluster refuses a blocking read across streams of two
slots, and a blocking read per partition would hold a connection per
partition. Instead a worker reads

- a partition it was told of (the enqueue script publishes the partition's
  number on ``tw:jobs:wake``; ``wake``), at once — or, with every slot busy,
  as soon as one frees;
- every partition, the legacy ``tw:jobs`` included, every ``sweep_seconds``
  when nothing woke it: what a wake-up missed (its pub/sub connection was down)
  waits at most that long;
- ``XAUTOCLAIM`` on every partition every ``reclaim_seconds``.

It asks one partition at a time for no more jobs than it has free slots, so it
never holds more than its concurrency. Woken partitions are read in the order
they were woken, and one whose read filled the request (it may hold more) goes
to the back of the line: a busy partition cannot starve the others. Sweeps
start one partition further each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from redis.exceptions import ResponseError

from tokenwire.jobqueue import Delivery, JobQueue, Partition, is_missing_group
from tokenwire.redis_client import TRANSPORT_ERRORS

log = logging.getLogger(__name__)

Read = Callable[[Partition, int], Awaitable[list[Delivery]]]


class Intake:
    def __init__(self, queue: JobQueue, sweep_seconds: float, reclaim_seconds: float,
                 on_read: Callable[[str, bool], None] = lambda stream, ok: None) -> None:
        self._queue = queue
        self._on_read = on_read  # each partition read: its stream, and whether it answered
        self._sweep_seconds = sweep_seconds
        self._reclaim_seconds = reclaim_seconds
        self._woken: dict[Partition, None] = {}  # an ordered set: first woken, first read
        self._wake = asyncio.Event()
        self._next_sweep = 0.0
        self._next_reclaim = 0.0
        self._rotation = 0

    def wake(self, message: str) -> None:
        """A job was enqueued on partition ``message`` (its number)."""
        try:
            partition = self._queue.partitions[int(message)]
        except (ValueError, IndexError):  # another deployment's partition count
            self.sweep_soon()
            return
        self._woken.setdefault(partition, None)
        self._wake.set()

    def sweep_soon(self) -> None:
        """Wake-ups may have been missed (the pub/sub connection was down): look
        at every partition now."""
        self._next_sweep = 0.0
        self._wake.set()

    async def take(self, free: int) -> list[Delivery]:
        """Up to ``free`` jobs, without waiting for any. Raises a transport error
        only if it took none (jobs already read are never dropped)."""
        taken: list[Delivery] = []
        now = time.monotonic()
        if now >= self._next_reclaim:
            self._next_reclaim = now + self._reclaim_seconds
            await self._read(self._rotated(), free, self._queue.reclaim, taken)
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_seconds
            self._woken.clear()
            order = self._rotated()
        else:
            order, self._woken = list(self._woken), {}
        for partition in await self._read(order, free, self._queue.read_new, taken):
            self._woken.setdefault(partition, None)  # unread, or it may hold more
        if not self._woken:
            self._wake.clear()
        return taken

    async def wait(self, stopping: asyncio.Event) -> None:
        """Until a partition is woken, a sweep or reclaim is due, or ``stopping``."""
        if self._woken:
            return
        due = min(self._next_sweep, self._next_reclaim) - time.monotonic()
        if due <= 0:
            return
        waiters = [asyncio.ensure_future(self._wake.wait()),
                   asyncio.ensure_future(stopping.wait())]
        try:
            await asyncio.wait(waiters, timeout=due, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _rotated(self) -> list[Partition]:
        partitions = self._queue.partitions
        self._rotation = (self._rotation + 1) % len(partitions)
        return partitions[self._rotation:] + partitions[:self._rotation]

    async def _read(self, partitions: Iterable[Partition], free: int, read: Read,
                    taken: list[Delivery]) -> list[Partition]:
        """Read ``partitions`` in order into ``taken`` until ``free`` jobs are
        taken; returns those left unread, and those that may hold more."""
        left: list[Partition] = []
        for partition in partitions:
            want = free - len(taken)
            if want <= 0:
                left.append(partition)
                continue
            try:
                got = await read(partition, want)
            except ResponseError as exc:
                if not is_missing_group(exc) and not isinstance(exc, TRANSPORT_ERRORS):
                    raise
                if is_missing_group(exc):  # Redis restarted empty
                    log.warning("the consumer group of %s is gone: recreating", partition.stream)
                    with contextlib.suppress(*TRANSPORT_ERRORS):
                        await self._queue.ensure_group(partition)
                    continue
                self._on_read(partition.stream, False)
                if not taken:
                    raise
                left.append(partition)
                continue
            except TRANSPORT_ERRORS:
                self._on_read(partition.stream, False)
                if not taken:
                    raise
                left.append(partition)
                continue
            self._on_read(partition.stream, True)
            taken += got
            if len(got) == want:  # there may be more
                left.append(partition)
        return left
