"""A stream opened for reading from a position: the checks before a response starts,
and its events as an async iterator for the protocol adapters.

``Follower.open`` answers at once what cannot be followed: 404 (no such
stream, or another tenant's), 410 (its record expired; the client holds a
cursor), 204 (``StreamComplete``: the client has everything, or the stream
ended and its events expired), or a transient ``StreamRebuilding`` when the
record is missing but Redis came back (or restarted) within the rebuild grace —
then the worker that holds its job may be rebuilding it. (The follower used
to poll Redis for 5 s inside the request; 2,000 such requests cost 39,678
Redis commands.)

SSE and WebSocket deliver an opened stream with a ``client_stream.ClientStream``
(push: the hub writes live events to the socket). The adapters (OpenAI,
AI SDK, conversations) pull: ``events()`` yields the events from the position
to the terminal one, the same position machine behind it, with a bounded queue
of live events between the hub and the consumer.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from tokenwire.cursor import Cursor
from tokenwire.edge.broker import Broker, LiveReader, catch_up
from tokenwire.edge.position import Live, Position
from tokenwire.edge.viewers import ViewerReporter
from tokenwire.errors import StreamGone, StreamNotFound, Unavailable
from tokenwire.events import Event
from tokenwire.store import StreamMeta


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
    """One stream, checked open for one client from its position."""

    __slots__ = ("_cancel_after", "_cursor", "_on_lag", "_queue_size", "_viewers",
                 "_want_snapshot", "broker", "created_at_ms", "key_id", "stream_id")

    def __init__(
        self, broker: Broker, stream_id: str, position: Cursor | None, *,
        want_snapshot: bool = False, viewers: ViewerReporter | None = None,
        cancel_after: float = 0.0, key_id: str | None = None, queue_size: int = 1024,
        created_at_ms: int | None = None, on_lag: Callable[[], None] | None = None,
    ) -> None:
        """``viewers``: report this client as watching (streams whose job
        cancels them ``cancel_after`` seconds after the last viewer left).
        ``queue_size``: live events ``events()`` holds for a slow consumer
        before it lags and catches up from the stream; ``on_lag`` is called
        when it does (once until it caught up)."""
        self.broker = broker
        self.stream_id = stream_id
        self._cursor = position
        self._want_snapshot = want_snapshot
        self._viewers = viewers
        self._cancel_after = cancel_after
        self._queue_size = queue_size
        #: the API key that created the stream (its connection limit counts this client)
        self.key_id = key_id
        #: the stream's creation (Redis' clock) when this client follows it
        #: from its start (no cursor, no snapshot): its time to first token
        self.created_at_ms = (created_at_ms if position is None and not want_snapshot
                              else None)
        self._on_lag = on_lag

    @classmethod
    async def open(
        cls, broker: Broker, viewers: ViewerReporter | None, stream_id: str,
        position: Cursor | None,
        *, want_snapshot: bool = False, tenant: str | None = None,
        redis_came_back: Callable[[], Awaitable[bool]] | None = None, queue_size: int = 1024,
        on_lag: Callable[[], None] | None = None,
    ) -> Follower:
        """Check that there is something to follow before a response starts:
        raises ``StreamNotFound`` (404), ``StreamGone`` (410), ``StreamComplete``
        (204), or ``StreamRebuilding`` (transient) when the record is missing
        and ``redis_came_back()`` says Redis came back within the rebuild grace.
        ``tenant``: a stream of another tenant is answered as if it did not exist."""
        meta = _visible(await broker.meta(stream_id), tenant)
        if meta is None:
            if redis_came_back is not None and await redis_came_back():
                raise StreamRebuilding()
            # A client that holds a cursor saw this stream: its record expired.
            raise StreamGone() if position else StreamNotFound()
        if meta.finished:
            at_end = position is not None and position == Cursor(meta.epoch or "", meta.last_seq)
            if at_end or not (await broker.read(stream_id, 0, 1)).events:
                raise StreamComplete()
        return cls(broker, stream_id, position, want_snapshot=want_snapshot,
                   viewers=viewers if meta.idle_cancel_ms is not None else None,
                   cancel_after=(meta.idle_cancel_ms or 0) / 1000, key_id=meta.key_id,
                   queue_size=queue_size, created_at_ms=meta.created_at_ms, on_lag=on_lag)

    def position(self) -> Position:
        """A fresh position machine at the client's cursor."""
        return Position(self._cursor, want_snapshot=self._want_snapshot)

    def watching(self) -> AbstractAsyncContextManager[None] | None:
        """What to hold while delivering: the viewer report, for streams whose
        job cancels them once nobody watches (None for the others)."""
        if self._viewers is None:
            return None
        return self._viewers.watching(self.stream_id, self._cancel_after)

    async def events(self) -> AsyncGenerator[Event, None]:
        """The events from the position to (and including) the terminal one.
        Raises ``RecordMissing`` when the record vanishes, and a Redis
        transport error when Redis fails (the caller ends its response; the
        client resumes from its cursor)."""
        position = self.position()
        feed = _Feed(position, self._queue_size, self._on_lag)
        watching = self.watching() or contextlib.nullcontext()
        async with self.broker.subscribe(self.stream_id, feed), watching:
            while True:
                while feed.queue:  # sent live before any read made now: they come first
                    yield feed.queue.popleft()
                read = position.next_read()
                if read is not None:
                    for event in await catch_up(self.broker, self.stream_id, position, read):
                        yield event
                    if position.missing:
                        raise RecordMissing()
                elif position.finished:
                    return
                else:
                    await feed.wait()


class _Feed(LiveReader):
    """The hub's subscriber for ``Follower.events``: in-order live events wait
    in a bounded queue for the consumer; when it is full the position lags
    (a read catches up once the consumer has taken what is queued)."""

    __slots__ = ("_on_lag", "_queue_size", "queue")

    def __init__(self, position: Position, queue_size: int,
                 on_lag: Callable[[], None] | None) -> None:
        super().__init__(position)
        self._queue_size = queue_size
        self._on_lag = on_lag
        self.queue: deque[Event] = deque()

    def on_event(self, event: Event) -> None:
        if len(self.queue) >= self._queue_size:
            if self._position.gap():  # once until it caught up
                self._wake()
                if self._on_lag is not None:
                    self._on_lag()
            return
        verdict = self._position.live(event)
        if verdict is Live.SEND:
            self.queue.append(event)
            self._wake()
        elif verdict is Live.RESYNC:
            self._wake()

    async def wait(self) -> None:
        await self._wait()


def _visible(meta: StreamMeta | None, tenant: str | None) -> StreamMeta | None:
    """``meta`` unless it belongs to another tenant (``tenant`` None: no tenants)."""
    return meta if meta is None or tenant is None or meta.tenant == tenant else None
