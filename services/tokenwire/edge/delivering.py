"""What every handler that hands a client a stream does around the delivery:
the connection counted against the stream's API key (``connections``), and
the client counted in the edge's viewer census (``census``) under its
protocol. One context manager, so every protocol counts alike.

A plain object rather than a generator-based context manager: every live
connection holds one for its whole life, and an async generator (with the
census' generator inside it) costs each idle connection ~1 KiB of frames
and the event loop's weak reference to it (``bench/idle_memory.py``)."""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

from tokenwire.edge import keys as appkeys
from tokenwire.edge.census import ViewerCensus
from tokenwire.edge.connections import Lease


class Delivering:
    """``delivering``'s ``async with`` block (see the module docstring)."""

    __slots__ = ("_census", "_counted", "_lease", "_protocol", "_stream_id")

    def __init__(self, app: web.Application, stream_id: str, key_id: str | None,
                 protocol: str) -> None:
        self._lease: Lease = app[appkeys.CONNECTIONS].held(key_id)
        self._census: ViewerCensus = app[appkeys.CENSUS]
        self._stream_id, self._protocol = stream_id, protocol
        self._counted = False

    async def __aenter__(self) -> None:
        await self._lease.__aenter__()  # OverLimit: nothing counted, nothing held
        self._census.join(self._stream_id, self._protocol)  # no await: a cancel leaves it right
        self._counted = True

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if self._counted:
            self._counted = False
            self._census.leave(self._stream_id, self._protocol)
        await self._lease.__aexit__(kind, error, traceback)


def delivering(app: web.Application, stream_id: str, key_id: str | None,
               protocol: str) -> Delivering:
    """Raises ``OverLimit`` (429) before the block when the key has its
    maximum of connections."""
    return Delivering(app, stream_id, key_id, protocol)
