"""A client's position in one stream, and what every input means for it.

Pure and synchronous: no I/O, no asyncio. It owns "no gap, no duplicate, reset
on epoch change" (DESIGN.md "Resume: the cursor"); whoever drives it (the
per-connection ``ClientStream``, the adapters' ``Follower``) only performs the
reads it asks for and writes the events it returns.

The client has everything of epoch ``epoch`` up to ``seq`` (``E.0``: nothing
of ``E`` yet; ``epoch`` None: nothing at all). Inputs:

- a **live event** (``live``): the next one is sent at once (``SEND``: the
  position advanced); one at or below the position is a duplicate (``SKIP``);
  anything else — a hole, another epoch — means the stream in Redis holds
  something the client lacks (``RESYNC``);
- a **gap signal** (``gap``): the live feed may have lost events, or the
  client could not take one (a full outbox), or the stream was quiet for long;
- the result of a **read** it asked for (``next_read`` → ``apply_page`` /
  ``apply_snapshot``): a page of events with the meta read atomically, or the
  epoch's text as a snapshot.

While a read is needed or in flight, live events are not sent (the read will
bring them); the highest one seen, and any gap signal, make it read again
after the current read, so the switch from reading to live delivery neither
skips nor repeats an event. When the position cannot be continued exactly —
another epoch, a cursor ahead of Redis, trimmed history — it emits ``reset``
(id ``<epoch>.0``) and the current epoch from its start, its early events as
one ``snapshot`` when they are no longer kept.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tokenwire import events as ev
from tokenwire.cursor import Cursor
from tokenwire.events import Event
from tokenwire.store import Page, Snapshot

#: Events per page read.
PAGE_SIZE = 500


class Live(enum.Enum):
    """What to do with a live event."""

    SEND = "send"  # the next event: write it (the position advanced)
    SKIP = "skip"  # nothing to do (a duplicate, or a read will bring it)
    RESYNC = "resync"  # read the stream (``next_read``): it holds what the client lacks


@dataclass(frozen=True, slots=True)
class Read:
    """A read the position needs: a page of events after ``after_seq``, or a snapshot."""

    snapshot: bool
    after_seq: int = 0
    count: int = PAGE_SIZE


SNAPSHOT_READ = Read(snapshot=True)
_PAGE = Read(snapshot=False)  # "a page read is needed" (its position is set when it is made)


class Position:
    """Where one client is in one stream (see the module docstring)."""

    __slots__ = ("_dirty", "_known", "_need", "_want_snapshot", "epoch", "expired", "finished",
                 "missing", "seq")

    def __init__(self, cursor: Cursor | None, *, want_snapshot: bool = False) -> None:
        self.epoch = cursor.epoch if cursor is not None else None
        self.seq = cursor.seq if cursor is not None else 0
        #: The terminal event was emitted: nothing follows.
        self.finished = False
        #: The stream ended and its events expired before the client had them
        #: all (a reconnect is answered 204; the text is in the status).
        self.expired = False
        #: The stream's record is gone (Redis lost it).
        self.missing = False
        self._want_snapshot = want_snapshot  # a late joiner's ``?snapshot=1``
        # None: level with the stream, live events go straight out. Else the
        # read needed next (the first one: a page, or the snapshot asked for).
        self._need: Read | None = _PAGE
        self._dirty = False  # something came up during a read: read again after it
        self._known = 0  # highest seq of ``epoch`` seen live since the last read was made

    @property
    def cursor(self) -> Cursor | None:
        return Cursor(self.epoch, self.seq) if self.epoch is not None else None

    @property
    def level(self) -> bool:
        """No read needed: live events are sent as they come."""
        return self._need is None

    @property
    def ended(self) -> bool:
        """Nothing more will ever be emitted (terminal sent, history expired, record gone)."""
        return self.finished or self.missing

    # --- live input (the hot path) -------------------------------------------

    def live(self, event: Event) -> Live:
        if self.finished or self.missing:
            return Live.SKIP
        if self._need is None:
            if event.epoch == self.epoch:
                seq = self.seq
                if event.seq == seq + 1:
                    self.seq = event.seq
                    self.finished = event.is_terminal
                    return Live.SEND
                if event.seq <= seq:
                    return Live.SKIP
                self._known = event.seq
            self._need = _PAGE
            return Live.RESYNC
        if event.epoch == self.epoch:
            # The read in flight may or may not hold it: if not, read again after it.
            self._known = max(self._known, event.seq)
        else:
            self._dirty = True
        return Live.SKIP

    def gap(self) -> bool:
        """Events may be missing (lost live messages, a live event the client
        could not take, a long quiet spell). True when a read is newly needed
        (the driver was idle and must wake up)."""
        if self.finished or self.missing:
            return False
        if self._need is None:
            self._need = _PAGE
            return True
        self._dirty = True
        return False

    # --- reads -----------------------------------------------------------------

    def next_read(self) -> Read | None:
        """The read to perform now, or None (level with the stream, or ended)."""
        if self._need is None or self.finished or self.missing:
            return None
        # What came up so far is covered by this read; anything from now on
        # (a live event it may or may not include, a gap) needs a read after it.
        self._dirty, self._known = False, 0
        if self._need.snapshot or (self._want_snapshot and self.seq == 0):
            return SNAPSHOT_READ
        return Read(snapshot=False, after_seq=self.seq)

    def apply_page(self, page: Page) -> list[Event]:
        """A page read (``next_read`` asked for it): the events to emit, in order."""
        meta = page.meta
        if meta is None:
            self.missing = True
            return []
        if meta.epoch is None:  # queued: its ``start`` will come live
            return self._settled([])
        out = self._follow_epoch(meta.epoch, meta.last_seq)
        if out or page.after_seq != self.seq:
            self._need = _PAGE  # the page was read for another position
            return out
        if self._want_snapshot and self.seq == 0:
            self._need = SNAPSHOT_READ
            return out
        events = page.events
        if (events and events[0].seq != self.seq + 1) or (not events and self.seq < meta.last_seq):
            if not events and meta.finished:
                self.finished = self.expired = True  # its events expired: nothing to send
                return out
            if self.seq > 0:
                out.append(self._reset(meta.epoch, "history_trimmed"))
            self._need = SNAPSHOT_READ  # the early events are gone: their text in one event
            return out
        for event in events:
            if event.epoch != self.epoch:  # not from one atomic read: read again
                self._dirty = True
                break
            self.seq = event.seq
            out.append(event)
            if event.is_terminal:
                self.finished = True
                self._need = None
                return out
        if len(events) >= page.count:
            self._need = _PAGE  # a full page: there may be more
            return out
        return self._settled(out)

    def apply_snapshot(self, snap: Snapshot | None) -> list[Event]:
        """A snapshot read: a ``reset`` if the epoch moved on, then the epoch's
        text up to its cursor as one ``snapshot`` event; the events after it
        come from the next page read."""
        if snap is None:
            self.missing = True
            return []
        meta = snap.meta
        if meta.epoch is None:  # queued (rebuilt): its ``start`` will come live
            return self._settled([])
        out = self._follow_epoch(meta.epoch, meta.last_seq)
        self._want_snapshot = False
        # A finished stream's terminal event carries no text: the page read sends it.
        seq = meta.last_seq - 1 if meta.finished else meta.last_seq
        if seq > self.seq:
            self.seq = seq
            out.append(ev.snapshot(meta.epoch, seq, snap.text))
        self._need = _PAGE
        return out

    # --- helpers ----------------------------------------------------------------

    def _follow_epoch(self, epoch: str, last_seq: int) -> list[Event]:
        """Adopt the stream's epoch; a ``reset`` first when the client's
        position cannot be continued in it."""
        if self.epoch is None:
            self.epoch = epoch
            return []
        if self.epoch != epoch:
            return [self._reset(epoch, "new_attempt")]
        if self.seq > last_seq:
            return [self._reset(epoch, "cursor_ahead")]
        return []

    def _settled(self, out: list[Event]) -> list[Event]:
        """The read is done: level, unless something came up meanwhile."""
        if self._dirty or self._known > self.seq:
            self._need = _PAGE
        else:
            self._need = None
        return out

    def _reset(self, epoch: str, reason: str) -> Event:
        self.epoch, self.seq, self._known = epoch, 0, 0
        return ev.reset(epoch, reason)

