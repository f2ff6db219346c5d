"""Per-connection send queue: bounded, merging, between a follower and a socket.

A client that falls behind accumulates queued events. Consecutive ``token``
events of one epoch are merged into one (contents concatenated, the cursor of
the last kept): the client receives the same text in fewer frames. ``put``
waits while the queue holds more than ``max_chars`` of text (backpressure: the
live feed then falls back to reading Redis, losing nothing); a client that
cannot take anything for ``slow_after`` seconds is a slow consumer and is
disconnected, to resume from its cursor.
"""

from __future__ import annotations

import asyncio
import json

from tokenwire.events import Event, dumps


class SlowConsumer(Exception):
    """The client did not keep up; disconnect it (it resumes from its cursor)."""


class _TokenRun:
    """Consecutive queued tokens of one epoch, kept as parts and encoded once when
    sent: merging stays linear in the text however long the backlog grows."""

    __slots__ = ("epoch", "parts", "seq")

    def __init__(self, first: Event, second: Event) -> None:
        self.epoch, self.seq = second.epoch, second.seq
        self.parts = [_content(first), _content(second)]

    def add(self, event: Event) -> None:
        self.parts.append(_content(event))
        self.seq = event.seq

    def to_event(self) -> Event:
        return Event(self.epoch, self.seq, "token", dumps({"content": "".join(self.parts)}))


def _content(token: Event) -> str:
    content: str = json.loads(token.data)["content"]
    return content


def _event(item: Event | _TokenRun) -> Event:
    return item.to_event() if isinstance(item, _TokenRun) else item


class Outbox:
    """The waiters are plain futures made only while someone waits: an idle
    connection's outbox holds no ``asyncio.Event`` (each one a ~760-byte deque)."""

    __slots__ = ("_error", "_held", "_item_waiter", "_items", "_max_chars", "_room_waiter",
                 "_slow_after", "merged")

    def __init__(self, max_chars: int, slow_after: float) -> None:
        self._items: list[Event | _TokenRun] = []  # a few items at most: runs merge
        self._held = 0  # JSON size of what is queued: a bound on the text it carries
        self._max_chars = max_chars
        self._slow_after = slow_after
        self._item_waiter: asyncio.Future[None] | None = None  # get() waits for an item
        self._room_waiter: asyncio.Future[None] | None = None  # put() waits for room
        self._error: BaseException | None = None
        self.merged = 0  # events folded into an earlier frame

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, event: Event) -> None:
        """Queue ``event``; raises ``SlowConsumer`` if the client stays stuck."""
        if self._held > self._max_chars:
            self._room_waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self._slow_after):
                    await self._room_waiter
            except TimeoutError as exc:
                raise SlowConsumer() from exc
            finally:
                self._room_waiter = None
        self._push(event)

    def offer(self, event: Event) -> bool:
        """Queue ``event`` if there is room now; False when the backlog is full
        (the caller then takes the waiting path, ``put``)."""
        if self._held > self._max_chars or self._error is not None:
            return False
        self._push(event)
        return True

    def _push(self, event: Event) -> None:
        last = self._items[-1] if self._items else None
        if event.type == "token" and last is not None and last.epoch == event.epoch:
            if isinstance(last, _TokenRun):
                last.add(event)
                self.merged += 1
            elif last.type == "token":
                self._items[-1] = _TokenRun(last, event)
                self.merged += 1
            else:
                self._items.append(event)
        else:
            self._items.append(event)
        self._held += len(event.data)
        _wake(self._item_waiter)

    def fail(self, error: BaseException) -> None:
        """The producer failed: the next ``get`` raises ``error`` at once."""
        self._error = error
        _wake(self._item_waiter)

    async def take(self) -> list[Event]:
        """Everything queued, once there is something (the writer sends it in
        one write); raises the producer's error at once."""
        while not self._items and self._error is None:
            self._item_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._item_waiter
            finally:
                self._item_waiter = None
        if self._error is not None:
            raise self._error
        events = [_event(item) for item in self._items]
        self._items.clear()
        self._held = 0
        _wake(self._room_waiter)
        return events


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
