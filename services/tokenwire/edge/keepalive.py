"""Keeping idle connections alive, and finding dead ones, without a task per connection.

A ``Heartbeat`` task writes a ping to every connection registered with it
every ``interval`` seconds: an SSE comment line (``sse.PING``), a WebSocket
ping frame. The edge runs one for its SSE responses and one for its
WebSockets. Bytes flowing keep proxies (nginx's ``proxy_read_timeout``) and
browsers from closing an idle stream.

A peer that vanished without closing (a phone that lost its network) is found
by the kernel: ``abort_unacknowledged_after`` sets ``TCP_USER_TIMEOUT``, so a
ping that stays unacknowledged that long aborts the connection, and the
handler sees it closed. (aiohttp's own WebSocket ``heartbeat=`` keeps timers
per socket; in aiohttp 3.14 they also keep a closed socket and its request
alive for up to 1.5 heartbeats, and the edge grew by ~6 KiB per closed
WebSocket with them: measured with a bare aiohttp server.)
"""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

from aiohttp import web

#: Pings written per event-loop turn: a ticker over 10,000 connections yields.
PINGS_PER_TURN = 500
_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", None)


class Pingable(Protocol):
    def ping(self) -> None:
        """Write a keep-alive, unless the connection is closed or still has
        bytes waiting (then it is not idle anyway)."""


class Heartbeat:
    """Pings every registered connection every ``interval`` seconds, from one
    task (``run``, supervised by the app)."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._connections: set[Pingable] = set()

    def __len__(self) -> int:
        return len(self._connections)

    def add(self, connection: Pingable) -> None:
        self._connections.add(connection)

    def discard(self, connection: Pingable) -> None:
        self._connections.discard(connection)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            for index, connection in enumerate(list(self._connections), 1):
                connection.ping()
                if index % PINGS_PER_TURN == 0:
                    await asyncio.sleep(0)


def abort_unacknowledged_after(request: web.BaseRequest, seconds: float) -> None:
    """Ask the kernel to abort the connection when written data stays
    unacknowledged for ``seconds`` (Linux ``TCP_USER_TIMEOUT``; elsewhere a
    no-op). The connection is not reused after a stream, so nothing is restored."""
    if _TCP_USER_TIMEOUT is None or request.transport is None:
        return
    sock = request.transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, int(seconds * 1000))
