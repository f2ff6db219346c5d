"""The text a client assembles from a stream's events, with the contract checked.

``Transcript`` applies ``token``, ``reset`` and ``snapshot`` and checks the
cursor invariants as it goes (every event is the next one of its epoch, an
epoch changes only after ``reset``, nothing follows the terminal event), so a
client — or a test — notices a gap, a duplicate or a splice instead of showing
wrong text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The event types of the contract; anything else on the wire is a notice to skip.
STREAM_EVENT_TYPES = frozenset({"start", "token", "reset", "snapshot", "done", "error"})
TERMINAL_TYPES = frozenset({"done", "error"})


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """One event of a stream: its cursor (``<epoch>.<seq>``), type and data."""

    id: str
    type: str
    data: dict[str, Any]

    @property
    def epoch(self) -> str:
        return self.id.rsplit(".", 1)[0]

    @property
    def seq(self) -> int:
        return int(self.id.rsplit(".", 1)[1])


class ProtocolViolation(AssertionError):
    """The server broke the event contract (a gap, a duplicate, a splice)."""


@dataclass
class Transcript:
    """The text a client assembles from events, with the contract checked."""

    text: str = ""
    epoch: str | None = None
    last_seq: int = 0
    events: list[ClientEvent] = field(default_factory=list)
    resets: int = 0
    terminal: ClientEvent | None = None
    #: Accept a token frame whose cursor jumps: the edge merges queued token events
    #: for a client that is behind or catching up. ``False`` demands steps of 1.
    allow_merged: bool = True

    @property
    def last_id(self) -> str | None:
        """The cursor to resume after (``Last-Event-ID``), None before the first event."""
        return f"{self.epoch}.{self.last_seq}" if self.epoch is not None else None

    @property
    def finished(self) -> bool:
        return self.terminal is not None

    def apply(self, event: ClientEvent) -> None:
        if self.terminal is not None:
            raise ProtocolViolation(f"event {event.id} after terminal {self.terminal.id}")
        self.events.append(event)
        if event.type == "reset":
            self.text, self.epoch, self.last_seq = "", event.data["epoch"], 0
            self.resets += 1
            return
        if self.epoch is not None and event.epoch != self.epoch:
            raise ProtocolViolation(f"epoch changed to {event.id} without a reset")
        if event.type == "snapshot":
            if event.seq < self.last_seq:
                raise ProtocolViolation(f"snapshot {event.id} goes back from {self.last_id}")
            self.text = event.data["content"]
        else:
            expected = self.last_seq + 1
            merged = self.allow_merged and event.type == "token" and event.seq > expected
            if event.seq != expected and not merged:
                raise ProtocolViolation(f"got {event.id} after {self.last_id}")
            if event.type == "token":
                self.text += event.data["content"]
        self.epoch, self.last_seq = event.epoch, event.seq
        if event.type in TERMINAL_TYPES:
            self.terminal = event

    def settle(self, status: dict[str, Any]) -> None:
        """Finish from ``GET /v1/streams/{id}`` (after a 204: the events are gone
        or were all delivered): its text and outcome become the transcript's."""
        cursor = status.get("cursor")
        if self.terminal is not None or status.get("status") not in ("done", "cancelled", "error"):
            return
        if cursor and cursor != self.last_id:
            self.text = str(status.get("text", ""))
            self.epoch, _, seq = str(cursor).rpartition(".")
            self.last_seq = int(seq)
        kind = "error" if status["status"] == "error" else "done"
        self.terminal = ClientEvent(self.last_id or "", kind, dict(status.get(kind) or {}))
