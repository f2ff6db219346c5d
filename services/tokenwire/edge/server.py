"""The edge's HTTP server: aiohttp's, plus a deadline on request heads.

aiohttp closes a connection that stays idle past ``keepalive_timeout``, but it
has no deadline for a request head that has started to arrive: a client that
sends a header line every few seconds (slowloris) holds its connection for as
long as it likes, and a few hundred such clients hold an edge's sockets.
``HeadTimeoutHandler`` starts a timer when the first bytes of a request head
reach an idle connection, and closes the connection if the head is still
incomplete when the timer fires. An idle connection keeps the keep-alive
timeout (a proxy's pooled connection is not cut short), a request being
handled is never touched by the timer (an SSE response may last an hour),
and bodies are bounded where they are read (``bodies.read_json_object``).

aiohttp offers no hook for this, so the handler looks at two attributes of
its base class: ``_waiter`` (set while the connection waits for its next
request) and ``_messages`` (complete request heads not yet handled).
``tests/integration/test_slow_clients.py`` pins the behaviour with real
sockets, so an aiohttp upgrade that changes them fails loudly.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from tokenwire.settings import Settings

log = logging.getLogger(__name__)


class HeadTimeoutHandler(RequestHandler):
    """aiohttp's connection handler with a deadline on each request head."""

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        idle = self._waiter is not None  # waiting for the next request head
        super().data_received(data)
        if self._messages or not idle:
            self._cancel_head_timer()  # the head is complete, or a request is being handled
        elif self._head_timer is None:
            self._head_timer = self._loop.call_later(self._head_timeout, self._head_too_slow)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._waiter is not None and not self._messages:
            log.debug("closing a connection whose request head took over %.1fs",
                     self._head_timeout)
            self.force_close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


class EdgeServer(web.Server):
    """``web.Server`` whose connections are ``HeadTimeoutHandler``s."""

    def __init__(self, handler: Any, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._head_timeout = head_timeout

    def __call__(self) -> RequestHandler:
        return HeadTimeoutHandler(self, loop=self._loop, head_timeout=self._head_timeout,
                                  **self._kwargs)


class EdgeRunner(web.AppRunner):
    """``web.AppRunner`` for the edge: request heads, bodies (in the handlers) and
    idle keep-alive connections all have a deadline (the settings below)."""

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=settings.keepalive_timeout_seconds, **kwargs)
        self._head_timeout = settings.request_head_timeout_seconds

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts the app; its arguments, our handler
        return EdgeServer(made.request_handler, request_factory=made.request_factory,
                          handler_cancellation=made.handler_cancellation,
                          head_timeout=self._head_timeout, **made._kwargs)
