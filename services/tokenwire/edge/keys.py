"""Typed application keys: everything shared lives on the app, nothing in module globals."""

from __future__ import annotations

import asyncio
import contextlib
import weakref

from aiohttp import web

from tokenwire.apikeys import KeyStore
from tokenwire.conversations import ConversationStore
from tokenwire.edge.auth import Authenticator
from tokenwire.edge.broker import Broker
from tokenwire.edge.census import ViewerCensus
from tokenwire.edge.client_stream import ClientStream, Disconnect
from tokenwire.edge.connections import ConnectionLeases
from tokenwire.edge.errors import WS_SERVICE_RESTART
from tokenwire.edge.hub import Hub
from tokenwire.edge.keepalive import Heartbeat
from tokenwire.edge.metrics import EdgeMetrics
from tokenwire.edge.redis_watch import RedisWatch
from tokenwire.edge.viewers import ViewerReporter
from tokenwire.journal import Journal
from tokenwire.limits import KeyLimiter
from tokenwire.redis_client import RedisClient
from tokenwire.redis_clock import RedisClock
from tokenwire.settings import Settings
from tokenwire.store import StreamStore
from tokenwire.tracing import Tracing

SETTINGS = web.AppKey("settings", Settings)
REDIS: web.AppKey[RedisClient] = web.AppKey("redis")
STORE = web.AppKey("store", StreamStore)
HUB = web.AppKey("hub", Hub)
BROKER: web.AppKey[Broker] = web.AppKey("broker")
METRICS = web.AppKey("metrics", EdgeMetrics)
VIEWERS = web.AppKey("viewers", ViewerReporter)
AUTH = web.AppKey("auth", Authenticator)
KEY_STORE = web.AppKey("key_store", KeyStore)
LIMITER = web.AppKey("limiter", KeyLimiter)
CONNECTIONS = web.AppKey("connections", ConnectionLeases)
REDIS_WATCH = web.AppKey("redis_watch", RedisWatch)
HEARTBEAT = web.AppKey("heartbeat", Heartbeat)  # SSE responses
WS_HEARTBEAT = web.AppKey("ws_heartbeat", Heartbeat)
CONVERSATIONS = web.AppKey("conversations", ConversationStore)
TRACING = web.AppKey("tracing", Tracing)
CENSUS = web.AppKey("census", ViewerCensus)
CLOCK = web.AppKey("clock", RedisClock)  # Redis' clock (delivery lag, the console)
JOURNAL = web.AppKey("journal", Journal)


class Lifecycle:
    """Whether the edge is draining, and the live deliveries to stop when it does:
    every SSE/WebSocket ``ClientStream``, and the conversation WebSockets."""

    def __init__(self) -> None:
        self.draining = False
        self.clients: set[ClientStream] = set()
        self.websockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self._all_left: asyncio.Event | None = None  # made by ``drain``

    def join(self, client: ClientStream) -> None:
        self.clients.add(client)

    def leave(self, client: ClientStream) -> None:
        self.clients.discard(client)
        if not self.clients and self._all_left is not None:
            self._all_left.set()

    async def drain(self, wait_at_most: float) -> None:
        """Mark the edge draining and end every live delivery: each client
        stream ends with ``DRAINING`` (its transport says so), conversation
        WebSockets close with 1012; waits (up to ``wait_at_most`` seconds)
        until they have."""
        self.draining = True
        self._all_left = asyncio.Event()
        if not self.clients:
            self._all_left.set()
        for client in list(self.clients):
            client.close(Disconnect.DRAINING)
        closing = [ws.close(code=WS_SERVICE_RESTART, message=b"edge restarting, resume")
                   for ws in list(self.websockets)]
        await asyncio.gather(*closing, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_at_most):
                await self._all_left.wait()


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
