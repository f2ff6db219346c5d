"""The edge application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from tokenwire.apikeys import KeyStore
from tokenwire.conversations import ConversationStore
from tokenwire.edge import keys as appkeys
from tokenwire.edge.auth import Authenticator, KeyCache, auth_problem
from tokenwire.edge.broker import RedisBroker
from tokenwire.edge.census import PROTOCOLS, ViewerCensus
from tokenwire.edge.cluster_live import ClusterLiveSource
from tokenwire.edge.connections import ConnectionLeases
from tokenwire.edge.errors import error_middleware
from tokenwire.edge.hub import Hub
from tokenwire.edge.instrumentation import metrics_middleware, tracing_middleware
from tokenwire.edge.keepalive import Heartbeat
from tokenwire.edge.live import LiveSource
from tokenwire.edge.metrics import EdgeMetrics
from tokenwire.edge.redis_live import RedisLiveSource
from tokenwire.edge.redis_watch import RedisWatch
from tokenwire.edge.routes import setup_routes
from tokenwire.edge.viewers import ViewerReporter
from tokenwire.jobqueue import queue_figures
from tokenwire.journal import Journal
from tokenwire.limits import KeyLimiter
from tokenwire.redis_client import RedisClient, create_redis
from tokenwire.redis_clock import RedisClock
from tokenwire.settings import Settings
from tokenwire.store import StreamStore
from tokenwire.supervision import start_supervised
from tokenwire.tracing import NO_TRACING, Tracing

log = logging.getLogger(__name__)


class InsecureSettings(ValueError):
    """The edge would be open to anyone without saying so (see ``auth_problem``)."""


def create_app(settings: Settings, redis: RedisClient | None = None, *,
               tracing: Tracing = NO_TRACING) -> web.Application:
    """Build the edge. ``redis`` lets a caller share its client (it stays the caller's).
    Refuses (``InsecureSettings``) to build an edge without auth unless auth is
    explicitly disabled. ``tracing``: spans of requests, their context in jobs."""
    if (problem := auth_problem(settings)) is not None:
        raise InsecureSettings(problem)
    metrics = EdgeMetrics()
    middlewares = [metrics_middleware(metrics), error_middleware]
    if tracing.enabled:
        middlewares.insert(0, tracing_middleware(tracing))
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[appkeys.SETTINGS] = settings
    app[appkeys.METRICS] = metrics
    app[appkeys.TRACING] = tracing
    app[appkeys.LIFECYCLE] = appkeys.Lifecycle()
    app.cleanup_ctx.append(_redis_context(redis))
    app.on_shutdown.append(_drain)
    setup_routes(app)
    return app


def live_source_for(redis: RedisClient) -> LiveSource:
    """The hub's live source for ``redis``'s mode: one pub/sub connection per
    node that owns subscribed channels on a cluster, one pub/sub connection
    otherwise (standalone, or the master Sentinel names). The hub above it,
    and everything that delivers, is the same in every mode."""
    if isinstance(redis, RedisCluster):
        return ClusterLiveSource(redis)
    return RedisLiveSource(redis)


def _redis_context(shared: RedisClient | None):  # type: ignore[no-untyped-def]
    async def context(app: web.Application) -> AsyncIterator[None]:
        # Nothing here waits for Redis: the edge starts (unready) while it is down.
        settings = app[appkeys.SETTINGS]
        redis = shared if shared is not None else create_redis(
            settings, "tw-edge", settings.edge_redis_max_connections)
        hub = Hub(live_source_for(redis), settings.idle_resync_seconds)
        store = StreamStore(redis, settings)
        conversations = ConversationStore(redis, settings)
        viewers = ViewerReporter(store, settings.watch_touch_seconds)
        key_store = KeyStore(redis)
        auth = Authenticator(settings, KeyCache(key_store, settings.key_cache_seconds))
        limiter = KeyLimiter(redis, settings)
        connections = ConnectionLeases(limiter, auth, settings.connection_lease_seconds)
        app[appkeys.AUTH] = auth
        app[appkeys.KEY_STORE] = key_store
        app[appkeys.LIMITER] = limiter
        app[appkeys.CONNECTIONS] = connections
        heartbeat = Heartbeat(settings.sse_ping_seconds)
        ws_heartbeat = Heartbeat(settings.ws_heartbeat_seconds)

        async def load_scripts() -> None:
            try:
                await store.load_scripts()
                await limiter.load_scripts()
                await conversations.load_scripts()
            except ResponseError as exc:  # e.g. out of memory: scripts load on first use
                log.warning("could not preload scripts: %s", exc)

        census = ViewerCensus(redis, f"{settings.host}:{settings.port}")
        clock = RedisClock(redis)
        # One periodic task talks to Redis for the whole edge: after each check,
        # the clock and the census (see ``redis_watch``).
        watch = RedisWatch(redis, load_scripts, every_check=[clock.sample, census.tick])
        _observe(app, redis, hub, watch, census=census, clock=clock)
        app[appkeys.REDIS] = redis
        app[appkeys.STORE] = store
        app[appkeys.CONVERSATIONS] = conversations
        app[appkeys.HUB] = hub
        app[appkeys.BROKER] = RedisBroker(store, hub)
        app[appkeys.VIEWERS] = viewers
        app[appkeys.REDIS_WATCH] = watch
        app[appkeys.HEARTBEAT] = heartbeat
        app[appkeys.WS_HEARTBEAT] = ws_heartbeat
        hub.start()
        viewers.start()
        connections.start()
        tasks = [start_supervised("redis-watch", watch.run),
                 start_supervised("sse-heartbeat", heartbeat.run),
                 start_supervised("ws-heartbeat", ws_heartbeat.run)]
        yield
        await watch.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await connections.close()
        await viewers.close()
        await hub.close()
        if shared is None:
            await redis.aclose()

    return context


def _observe(app: web.Application, redis: RedisClient, hub: Hub, watch: RedisWatch, *,
             census: ViewerCensus, clock: RedisClock) -> None:
    """What operators see of this edge: metrics read at scrape time, the viewer
    census, Redis' clock, the journal."""
    app[appkeys.CENSUS] = census
    app[appkeys.CLOCK] = clock
    app[appkeys.JOURNAL] = Journal(redis)
    metrics = app[appkeys.METRICS]
    metrics.watch_hub(lambda: hub.channels, lambda: hub.subscribers,
                      lambda: hub.messages_received, lambda: hub.gap_signals)
    metrics.watch_viewers(lambda protocol: census.by_protocol[protocol], PROTOCOLS,
                          lambda: len(census.viewers))
    metrics.watch_redis(lambda: 1.0 if watch.reachable else 0.0)
    metrics.watch_queue(lambda: queue_figures(redis, app[appkeys.SETTINGS].job_partitions))


async def start_draining(app: web.Application) -> None:
    """First step of a graceful stop, while the edge still listens: ``/readyz``
    fails and new streams get 503, so the load balancer moves clients away."""
    app[appkeys.LIFECYCLE].draining = True
    await asyncio.sleep(app[appkeys.SETTINGS].drain_ready_delay_seconds)


async def _drain(app: web.Application) -> None:
    """Stop live deliveries (``on_shutdown``): SSE responses end with a ``retry:``
    spread over the drain window, WebSockets close with 1012; clients resume
    on another edge."""
    await app[appkeys.LIFECYCLE].drain(app[appkeys.SETTINGS].send_timeout_seconds)
