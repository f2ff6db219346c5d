"""What every handler that hands a client a stream does around the delivery:
the connection counted against the stream's API key (``connections``), and
the client counted in the edge's viewer census (``census``) under its
protocol. One context manager, so every protocol counts alike."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from tokenwire.edge import keys as appkeys


@contextlib.asynccontextmanager
async def delivering(app: web.Application, stream_id: str, key_id: str | None,
                     protocol: str) -> AsyncIterator[None]:
    """Raises ``OverLimit`` (429) before the block when the key has its
    maximum of connections."""
    async with app[appkeys.CONNECTIONS].held(key_id):
        with app[appkeys.CENSUS].watching(stream_id, protocol):
            yield
