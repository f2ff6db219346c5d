"""Typed application keys: everything shared lives on the app, nothing in module globals."""

from __future__ import annotations

import asyncio
import weakref

from aiohttp import web

from tokenwire.apikeys import KeyStore
from tokenwire.conversations import ConversationStore
from tokenwire.edge.auth import Authenticator
from tokenwire.edge.census import ViewerCensus
from tokenwire.edge.connections import ConnectionLeases
from tokenwire.edge.keepalive import Heartbeat
from tokenwire.edge.metrics import EdgeMetrics
from tokenwire.edge.redis_watch import RedisWatch
from tokenwire.edge.source_hub import AnyHub
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
HUB: web.AppKey[AnyHub] = web.AppKey("hub")
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
    """Whether the edge is draining, and the live deliveries to stop when it does."""

    def __init__(self) -> None:
        self.draining = False
        self.sse_tasks: weakref.WeakSet[asyncio.Task[object]] = weakref.WeakSet()
        self.websockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
