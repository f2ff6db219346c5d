"""A local subscriber's view of one stream's live events (see ``hub``)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from tokenwire.events import Event


class Subscription:
    """A local subscriber's view of one stream's live events.

    ``direct``, while set, is offered each event before it is queued: the
    hot path, where a reader parked on ``get`` takes an in-order event
    synchronously (no task switch). It returns False for anything it does not
    take (out of order, no room), which is then queued as usual.

    The backlog and the waiter are made only when needed: an idle edge holds
    thousands of subscriptions, and an ``asyncio.Queue`` costs four deques
    (~3 KiB) each."""

    __slots__ = ("_backlog", "_maxsize", "_waiter", "direct", "lagged", "stream_id")

    def __init__(self, stream_id: str, maxsize: int) -> None:
        self.stream_id = stream_id
        # None in the backlog means "lagged: re-read Redis".
        self._backlog: deque[Event | None] | None = None
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self.lagged = False
        self.direct: Callable[[Event], bool] | None = None

    def deliver(self, event: Event) -> None:
        if self.lagged:
            return
        if self.direct is not None and not self._backlog and self.direct(event):
            return
        if self._backlog is not None and len(self._backlog) >= self._maxsize:
            self.mark_lagged()
            return
        self._push(event)

    def mark_lagged(self) -> None:
        """Drop what is queued; the reader will catch up from the stream."""
        self._backlog = None
        self.lagged = True
        self._push(None)

    def recover(self) -> None:
        """Called by the reader right before it re-reads Redis: live delivery resumes."""
        self._backlog = None
        self.lagged = False

    async def get(self, quiet_after: float) -> Event | None:
        """The next live event; None when lagged or quiet for ``quiet_after`` seconds."""
        if not self._backlog:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(quiet_after):
                    await self._waiter
            except TimeoutError:
                return None
            finally:
                self._waiter = None
        assert self._backlog  # only _push wakes the waiter
        return self._backlog.popleft()

    def _push(self, item: Event | None) -> None:
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
