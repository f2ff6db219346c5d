"""The wire events: the public contract of DESIGN.md ("Events").

An event is stored once (a Redis stream entry), published once (the live
channel) and sent many times (SSE / WebSocket). ``data`` is kept as the JSON
text it was written with, so fan-out never re-encodes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from tokenwire.cursor import Cursor

EventType = Literal["start", "token", "reset", "snapshot", "done", "error"]
TERMINAL_TYPES: Final = frozenset({"done", "error"})


def dumps(value: Any) -> str:
    """One line of JSON: model output can never forge SSE fields."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Event:
    epoch: str
    seq: int
    type: str
    data: str  # JSON text
    #: When Redis appended it (its own clock, microseconds; ``redis_clock``), for
    #: the edge's delivery lag; None for what an edge makes (``reset``,
    #: ``snapshot``). Not part of the wire form, nor of equality.
    appended_at_us: int | None = field(default=None, compare=False, repr=False)
    # The wire forms, encoded by the first viewer that needs them (see ``sse_bytes``).
    _sse: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _ws: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.epoch, self.seq)

    @property
    def id(self) -> str:
        return f"{self.epoch}.{self.seq}"

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def payload(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.data)
        return decoded

    def sse_bytes(self) -> bytes:
        """SSE wire form, encoded once however many viewers the event has.
        ``data`` is one line of JSON by construction (``dumps``), ids and types
        use cursor-safe characters: nothing needs splitting or escaping."""
        if self._sse is None:  # frozen, but a cache of a pure function of the fields
            frame = f"id: {self.id}\r\nevent: {self.type}\r\ndata: {self.data}\r\n\r\n"
            object.__setattr__(self, "_sse", frame.encode())
        return self._sse  # type: ignore[return-value]

    def ws_bytes(self) -> bytes:
        """``ws_frame`` encoded, once however many viewers the event has."""
        if self._ws is None:
            object.__setattr__(self, "_ws", self.ws_frame().encode())
        return self._ws  # type: ignore[return-value]

    def ws_frame(self) -> str:
        """WebSocket wire form: ``{"id", "type", ...data}`` without decoding ``data``."""
        head = dumps({"id": self.id, "type": self.type})
        if self.data == "{}":
            return head
        return head[:-1] + "," + self.data[1:]

    def to_live_message(self) -> str:
        """The live channel payload; the append script writes the same form:
        ``<epoch>.<seq>@<appended at> <type> <data>`` (``@…`` only when known)."""
        stamp = "" if self.appended_at_us is None else f"@{self.appended_at_us}"
        return f"{self.id}{stamp} {self.type} {self.data}"

    @classmethod
    def from_live_message(cls, message: str) -> Event:
        """Parses both forms: with the append time, and without it (as
        scripts older than the time stamp publish)."""
        cursor, type_, data = message.split(" ", 2)
        cursor, _, stamp = cursor.partition("@")
        epoch, seq = cursor.rsplit(".", 1)
        return cls(epoch, int(seq), type_, data, int(stamp) if stamp else None)


def reset(epoch: str, reason: str) -> Event:
    """Tell the client to discard what it assembled; ``epoch`` follows from its start.

    A reset carries the cursor ``<epoch>.0``: nothing of the new epoch seen yet.
    """
    return Event(epoch, 0, "reset", dumps({"reason": reason, "epoch": epoch}))


def snapshot(epoch: str, seq: int, content: str) -> Event:
    return Event(epoch, seq, "snapshot", dumps({"content": content}))
