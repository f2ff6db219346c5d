"""A Jepsen-style checker: every client's events are recorded as received, then
checked against the rules of DESIGN.md ("Resume: the cursor") and against
what the model actually produced.

Per client and stream:

- cursors strictly increase within an epoch, by exactly 1 — except across a
  ``token`` frame that merged several events, or a ``snapshot``;
- no event is received twice (a duplicate breaks the rule above);
- the epoch changes only right after a ``reset`` naming the new epoch;
- exactly one terminal event, and nothing after it;
- the final epoch's text: for ``done``, the model's output byte for byte and
  ``done.sha256``; for a cancel or an ``error``, a prefix of the model's output
  (never foreign text).

The checker knows nothing of Tokenwire's code: it reads only what went over
the wire, so it cannot share a bug with the implementation.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Received:
    id: str | None
    type: str
    data: dict[str, Any]
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass
class ClientRecord:
    """Everything one client received, connection by connection."""

    client: str
    stream_id: str
    initial_cursor: str | None = None  # the client resumes from here (as if it had seen it)
    connections: list[list[Received]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # HTTP status of each attempt

    def connect(self, status: int) -> None:
        self.statuses.append(status)
        if status == 200:
            self.connections.append([])

    def receive(self, event_id: str | None, event_type: str, data: str) -> None:
        self.connections[-1].append(Received(event_id, event_type, json.loads(data)))

    @property
    def events(self) -> list[Received]:
        return [event for connection in self.connections for event in connection]

    @property
    def terminal(self) -> Received | None:
        ends = [e for e in self.events if e.type in ("done", "error")]
        return ends[-1] if ends else None

    @property
    def last_id(self) -> str | None:
        ids = [e.id for e in self.events if e.id is not None]
        return ids[-1] if ids else None


@dataclass
class Verdict:
    text: str = ""
    resets: int = 0
    terminal: Received | None = None
    violations: list[str] = field(default_factory=list)


def check(record: ClientRecord, model_output: str) -> Verdict:
    """Apply the rules to one client's record; ``model_output``: what the model
    generated for this stream's prompt."""
    verdict = Verdict()
    epoch: str | None = None
    seq = 0
    if record.initial_cursor:
        epoch, _, raw = record.initial_cursor.rpartition(".")
        seq = int(raw)

    def violation(message: str) -> None:
        verdict.violations.append(f"{record.client} {record.stream_id[:8]}: {message}")

    for event in record.events:
        if event.type == "reconnect" and event.id is None:
            continue  # a notice that the connection ends early: the client resumes
        if verdict.terminal is not None:
            violation(f"{event.type} {event.id} after the terminal event")
            continue
        if event.id is None or "." not in event.id:
            violation(f"{event.type} without a cursor")
            continue
        event_epoch, _, raw_seq = event.id.rpartition(".")
        event_seq = int(raw_seq)
        if event.type == "reset":
            if event.data.get("epoch") != event_epoch or event_seq != 0:
                violation(f"reset {event.id} names epoch {event.data.get('epoch')}")
            epoch, seq, verdict.text = event_epoch, 0, ""
            verdict.resets += 1
            continue
        if epoch is not None and event_epoch != epoch:
            violation(f"epoch changed to {event.id} without a reset (was {epoch}.{seq})")
        if event_seq <= seq and event_epoch == epoch:
            violation(f"{event.id} repeats or goes back (had {epoch}.{seq})")
            continue
        jumped = event_seq != seq + 1
        if event.type == "snapshot":
            content = event.data["content"]
            if not content.startswith(verdict.text):
                violation(f"snapshot {event.id} rewrites text already assembled")
            verdict.text = content
        elif jumped and not (event.type == "token" and seq >= 1):
            violation(f"gap: {event.type} {event.id} after {epoch}.{seq}")
        elif event.type == "token":
            verdict.text += event.data["content"]
        epoch, seq = event_epoch, event_seq
        if event.type in ("done", "error"):
            verdict.terminal = event

    if verdict.terminal is None:
        violation(f"no terminal event (HTTP statuses {record.statuses})")
        return verdict
    end = verdict.terminal
    digest = hashlib.sha256(verdict.text.encode()).hexdigest()
    if end.type == "done" and end.data.get("finish_reason") != "cancelled":
        if verdict.text != model_output:
            violation(f"text differs from the model's output ({len(verdict.text)} vs "
                      f"{len(model_output)} chars)")
    elif not model_output.startswith(verdict.text):
        violation("text is not a prefix of the model's output")
    if end.type == "done" and end.data.get("sha256") != digest:
        violation("done.sha256 does not match the text")
    return verdict
