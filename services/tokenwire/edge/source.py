"""The one seam between the protocol adapters and delivery: a stream's events
after a cursor, as an async iterator.

The conversation WebSocket, the OpenAI facades and the AI SDK's chat route
use only ``open_events``; how events are read (the broker seam and the position
machine: replay, then live from the hub, de-duplicated) stays behind it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import web

from tokenwire.cursor import Cursor
from tokenwire.edge import keys as appkeys
from tokenwire.edge.follower import Follower
from tokenwire.events import Event


class StreamEvents(Protocol):
    """A stream's events from a position, to (and including) the terminal one.
    A ``reset`` means: discard what you assembled, the epoch follows from its
    start; a ``snapshot`` carries the epoch's text so far."""

    #: the API key that created the stream (its connection limit counts readers)
    key_id: str | None

    def events(self) -> AsyncIterator[Event]: ...


async def open_events(app: web.Application, stream_id: str, after: Cursor | None, *,
                      tenant: str | None, snapshot: bool = False) -> StreamEvents:
    """Check there is something to read, before any response starts: raises
    ``StreamNotFound`` (also another tenant's stream), ``StreamGone`` and
    ``StreamComplete`` (nothing after ``after``). ``snapshot``: start with the
    text so far as one ``snapshot`` event, then live events."""
    return await Follower.open(
        app[appkeys.BROKER], app[appkeys.VIEWERS], stream_id, after, want_snapshot=snapshot,
        tenant=tenant, queue_size=app[appkeys.SETTINGS].subscriber_queue_size,
        on_lag=app[appkeys.METRICS].subscriber_lagged)
