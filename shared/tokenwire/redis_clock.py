"""Redis' clock, as seen from this process: one clock for every time comparison
between processes.

Events are stamped with Redis' own ``TIME`` when they are appended (the append
script), and a job's queue entry id is Redis' time when it was enqueued. A
process that measures against those — an edge's delivery lag, a worker's queue
wait — reads its own clock and adds the offset to Redis' clock, so the clocks
of worker and edge hosts never meet: skew between them does not bias a
measurement. The offset is sampled (``sample``, one ``TIME`` round trip) by
a periodic task of the process; each sample's error is at most half its round
trip, and the estimate keeps the sample with the shortest round trip of the
last few (NTP's rule), so one slow reply does not move it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tokenwire.redis_client import RedisClient

#: Samples kept: at one a second, the best of the last half minute.
SAMPLES = 30


@dataclass(frozen=True, slots=True)
class _Sample:
    offset_us: float  # Redis' clock minus ours
    round_trip_us: float


class RedisClock:
    """``now_us()``: Redis' time now, in microseconds since the epoch. Until the
    first ``sample`` it is this host's clock (offset 0)."""

    def __init__(self, redis: RedisClient, wall_clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._wall_clock = wall_clock
        self._samples: deque[_Sample] = deque(maxlen=SAMPLES)
        self._offset_us = 0.0
        self.round_trip_us: float | None = None  # of the sample in use: twice the error bound

    @property
    def offset_us(self) -> float:
        """Redis' clock minus this host's, in microseconds."""
        return self._offset_us

    @property
    def synchronised(self) -> bool:
        return self.round_trip_us is not None

    def now_us(self) -> float:
        return self._wall_clock() * 1e6 + self._offset_us

    def now_ms(self) -> int:
        return int(self.now_us() // 1000)

    def seconds_since_us(self, redis_time_us: int) -> float:
        """Seconds from ``redis_time_us`` (a Redis time stamp) until now."""
        return (self.now_us() - redis_time_us) / 1e6

    async def sample(self) -> None:
        """One ``TIME`` round trip; raises the client's errors."""
        before = self._wall_clock()
        seconds, micros = await self._redis.time()
        after = self._wall_clock()
        redis_us = seconds * 1_000_000 + micros
        middle_us = (before + after) / 2 * 1e6
        self._samples.append(_Sample(redis_us - middle_us, (after - before) * 1e6))
        best = min(self._samples, key=lambda sample: sample.round_trip_us)
        self._offset_us, self.round_trip_us = best.offset_us, best.round_trip_us


def entry_time_ms(entry_id: str) -> int:
    """The Redis time (ms) in a stream entry id Redis generated (``XADD *``)."""
    return int(entry_id.split("-", 1)[0])
