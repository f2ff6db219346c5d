"""Per-connection send queue between the position machine and the socket: merging, bounded.

A client that falls behind accumulates queued events. Consecutive ``token``
events of one epoch are merged into one (contents concatenated, the cursor of
the last kept): the client receives the same text in fewer frames. The queue
is synchronous — its one connection's task fills and empties it, and the
hub's dispatch adds live events to it — and bounded by the text it holds:
once ``full``, live events are not queued but left to a read of the stream
(the client lags, losing nothing; see ``client_stream``).
"""

from __future__ import annotations

import json

from tokenwire.events import Event, dumps


class _TokenRun:
    """Consecutive queued tokens of one epoch, kept as parts and encoded once when
    sent: merging stays linear in the text however long the backlog grows."""

    __slots__ = ("appended_at_us", "epoch", "parts", "seq")

    def __init__(self, first: Event, second: Event) -> None:
        self.epoch, self.seq = second.epoch, second.seq
        # The oldest token's append time: the frame's delivery lag is the
        # longest any of its text waited (``delivery_meter``).
        self.appended_at_us = first.appended_at_us
        self.parts = [_content(first), _content(second)]

    def add(self, event: Event) -> None:
        self.parts.append(_content(event))
        self.seq = event.seq

    def to_event(self) -> Event:
        return Event(self.epoch, self.seq, "token", dumps({"content": "".join(self.parts)}),
                     self.appended_at_us)


def _content(token: Event) -> str:
    content: str = json.loads(token.data)["content"]
    return content


def _event(item: Event | _TokenRun) -> Event:
    return item.to_event() if isinstance(item, _TokenRun) else item


class Outbox:
    __slots__ = ("_held", "_items", "_max_chars", "merged")

    def __init__(self, max_chars: int) -> None:
        self._items: list[Event | _TokenRun] = []  # a few items at most: runs merge
        self._held = 0  # JSON size of what is queued: a bound on the text it carries
        self._max_chars = max_chars
        self.merged = 0  # events folded into an earlier frame

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        """Over ``max_chars``: the client is behind; take no more live events."""
        return self._held > self._max_chars

    def push(self, event: Event) -> None:
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

    def take(self) -> list[Event]:
        """Everything queued, as frames (the writer sends it in one write)."""
        events = [_event(item) for item in self._items]
        self._items.clear()
        self._held = 0
        return events
