"""One client's events from a cursor: replay from the stream, then live from the hub.

The switch from replay to live cannot skip or repeat an event because the
order is: subscribe (confirmed by Redis) → read the stream → de-duplicate live
events by ``seq``. Any live event that does not continue the client's position
exactly (a gap, another epoch, a lagged queue, a quiet spell) sends the
follower back to the stream in Redis, the source of truth. Knows no HTTP.

Positions (DESIGN.md "Resume: the cursor"): after ``E.n`` the client gets
``n+1, n+2, …`` of epoch ``E``; when that is impossible, a ``reset`` and the
current epoch from its start (its early events as one ``snapshot`` when they are
no longer kept). ``reset`` carries ``<epoch>.0``: nothing of the new epoch seen.

A stream whose record is missing is answered at once, never waited for in the
request: as gone (404/410), unless Redis came back (or restarted) within the
rebuild grace — then its worker may be rebuilding the record from the job it
holds, and the answer is transient (``StreamRebuilding``: the client comes
back). A record that vanishes under a follower ends the response
(``RecordMissing``); the client's reconnect gets that same answer.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable

from tokenwire import events as ev
from tokenwire.cursor import Cursor
from tokenwire.edge.source_hub import AnyHub
from tokenwire.edge.viewers import ViewerReporter
from tokenwire.errors import StreamGone, StreamNotFound, Unavailable
from tokenwire.events import Event
from tokenwire.store import StreamMeta, StreamStore

log = logging.getLogger(__name__)

PAGE_SIZE = 500


class StreamComplete(Exception):
    """The client already has everything there is (HTTP 204)."""


class RecordMissing(Exception):
    """The stream's record vanished while it was being followed (Redis lost
    it): end the response without a terminal event; the reconnect decides."""


class StreamRebuilding(Unavailable):
    """No record, but Redis came back recently: its worker may be rebuilding it."""

    def __init__(self) -> None:
        super().__init__("stream_rebuilding",
                         "Redis came back without this stream; its worker may be rebuilding it",
                         retry_after=1)


class Follower:
    def __init__(
        self,
        store: StreamStore,
        hub: AnyHub,
        stream_id: str,
        position: Cursor | None,
        *,
        idle_resync: float,
        want_snapshot: bool = False,
        viewers: ViewerReporter | None = None,
        cancel_after: float = 0.0,
        meta: StreamMeta | None = None,
    ) -> None:
        """``viewers``: report this client as watching (streams whose job
        cancels them ``cancel_after`` seconds after the last viewer left).
        ``meta``: the stream record as just read, used by the first replay."""
        self._store = store
        self._hub = hub
        self._viewers = viewers
        self._cancel_after = cancel_after
        self.stream_id = stream_id
        self.epoch = position.epoch if position else None
        self.seq = position.seq if position else 0
        # Jittered per follower, so thousands of idle clients do not re-check at once.
        self._idle_resync = idle_resync * random.uniform(0.75, 1.25)
        self._want_snapshot = want_snapshot
        self.finished = False
        # The live hot path (see ``send_live_to``); None: every event goes
        # through ``events()``.
        self._emit: Callable[[Event], bool] | None = None
        self._taken_directly = 0
        # One Redis round trip less per connect (a connect storm of thousands
        # queues on the edge's few connections). Reading the record before
        # subscribing is safe: the replay's own page read comes after the
        # subscription, and a record older than that page is the normal case.
        self._opening_meta = meta
        #: the API key that created the stream (its connection limit counts this client)
        self.key_id = meta.key_id if meta is not None else None

    @classmethod
    async def open(
        cls, store: StreamStore, hub: AnyHub, viewers: ViewerReporter, stream_id: str,
        position: Cursor | None, *, idle_resync: float, want_snapshot: bool = False,
        tenant: str | None = None,
        redis_came_back: Callable[[], Awaitable[bool]] | None = None,
    ) -> Follower:
        """Check that there is something to follow before a response starts:
        raises ``StreamNotFound`` (404), ``StreamGone`` (410), ``StreamComplete``
        (204), or ``StreamRebuilding`` (transient) when the record is missing
        and ``redis_came_back()`` says Redis came back within the rebuild grace.
        ``tenant``: a stream of another tenant is answered as if it did not exist."""
        meta = _visible(await store.meta(stream_id), tenant)
        if meta is None:
            if redis_came_back is not None and await redis_came_back():
                raise StreamRebuilding()
            # A client that holds a cursor saw this stream: its record expired.
            raise StreamGone() if position else StreamNotFound()
        if meta.finished:
            at_end = position is not None and position == Cursor(meta.epoch or "", meta.last_seq)
            if at_end or not await store.events_exist(stream_id):
                raise StreamComplete()
        return cls(store, hub, stream_id, position, idle_resync=idle_resync,
                   want_snapshot=want_snapshot,
                   viewers=viewers if meta.idle_cancel_ms is not None else None,
                   cancel_after=(meta.idle_cancel_ms or 0) / 1000, meta=meta)

    def send_live_to(self, emit: Callable[[Event], bool]) -> None:
        """While ``events()`` waits for live events, in-order ones are handed to
        ``emit`` straight from the hub (it returns False when it has no room):
        no task switch per event. Everything else — gaps, other epochs, a full
        outbox — still goes through ``events()``."""
        self._emit = emit

    async def events(self) -> AsyncIterator[Event]:
        """Yield events until (and including) the terminal one (minus those
        handed to ``send_live_to``'s callback)."""
        # Not an AsyncExitStack: its deque costs ~760 bytes per idle connection.
        watching = (contextlib.nullcontext() if self._viewers is None
                    else self._viewers.watching(self.stream_id, self._cancel_after))
        async with self._hub.subscribe(self.stream_id) as live, watching:
            async for event in self._replay():
                yield event
            while not self.finished:
                taken_before = self._taken_directly
                if self._emit is not None:
                    live.direct = self._take_live
                try:
                    incoming = await live.get(self._idle_resync)
                finally:
                    live.direct = None
                if incoming is None and not live.lagged and self._taken_directly > taken_before:
                    continue  # not quiet: events went the direct way
                if incoming is not None and incoming.epoch == self.epoch:
                    if incoming.seq <= self.seq:
                        continue  # already sent during replay
                    if incoming.seq == self.seq + 1:
                        yield self._advance(incoming)
                        continue
                if incoming is None:
                    live.recover()
                async for event in self._replay():
                    yield event

    def _take_live(self, event: Event) -> bool:
        """The hot path, called by the hub while ``events()`` waits."""
        if event.epoch != self.epoch or self.finished:
            return False
        if event.seq <= self.seq:
            return True  # already sent
        if event.seq != self.seq + 1 or self._emit is None or not self._emit(event):
            return False
        self._advance(event)
        self._taken_directly += 1
        return True

    def _advance(self, event: Event) -> Event:
        self.epoch, self.seq = event.epoch, event.seq
        self.finished = event.is_terminal
        return event

    async def _replay(self) -> AsyncIterator[Event]:
        """Bring the client level with Redis."""
        meta, self._opening_meta = self._opening_meta, None
        if meta is None:
            meta = await self._store.meta(self.stream_id)
        if meta is None:
            raise RecordMissing()
        if meta.epoch is None:
            return  # queued: its start comes live
        if self.epoch is not None and (self.epoch != meta.epoch or self.seq > meta.last_seq):
            reason = "new_attempt" if self.epoch != meta.epoch else "cursor_ahead"
            yield self._reset(meta.epoch, reason)
        self.epoch = meta.epoch
        if self._want_snapshot and self.seq == 0:
            self._want_snapshot = False
            async for event in self._snapshot():
                yield event
        while not self.finished:
            page = await self._store.read_events(self.stream_id, self.seq, PAGE_SIZE)
            if page and page[0].epoch != self.epoch:
                # A new attempt began after we read meta: start over from it.
                yield self._reset(page[0].epoch, "new_attempt")
                continue
            if (page and page[0].seq != self.seq + 1) or (not page and self.seq < meta.last_seq):
                if not page and meta.finished:
                    self.finished = True  # history expired: a reconnect gets 204
                    return
                if self.seq > 0:
                    yield self._reset(self.epoch, "history_trimmed")
                async for event in self._snapshot():
                    yield event
                continue
            for event in page:
                yield self._advance(event)
                if self.finished:
                    return
            if len(page) < PAGE_SIZE:
                return

    async def _snapshot(self) -> AsyncIterator[Event]:
        """The epoch's text so far as one event, consistent with its cursor."""
        snap = await self._store.snapshot(self.stream_id)
        if snap is None:
            raise RecordMissing()
        if snap.meta.epoch is None:
            return
        if snap.meta.epoch != self.epoch:
            yield self._reset(snap.meta.epoch, "new_attempt")
        # A finished stream's terminal event carries no text: leave it to the replay.
        seq = snap.meta.last_seq - 1 if snap.meta.finished else snap.meta.last_seq
        self.seq = seq
        yield ev.snapshot(snap.meta.epoch, seq, snap.text)

    def _reset(self, epoch: str, reason: str) -> Event:
        log.info("reset %s", reason, extra={"stream_id": self.stream_id})
        self.epoch, self.seq = epoch, 0
        return ev.reset(epoch, reason)



def _visible(meta: StreamMeta | None, tenant: str | None) -> StreamMeta | None:
    """``meta`` unless it belongs to another tenant (``tenant`` None: no tenants)."""
    return meta if meta is None or tenant is None or meta.tenant == tenant else None
