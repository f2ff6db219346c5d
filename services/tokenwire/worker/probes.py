"""The worker's own HTTP listener: ``/metrics``, ``/healthz``, ``/readyz``
(``TOKENWIRE_WORKER_METRICS_PORT``), so Prometheus can scrape it and
Kubernetes probe it.

- ``/readyz`` — ready to take jobs: the intake loop runs (started, not
  stopping), Redis answers a ``PING`` now (in a cluster: one node, redis-py's
  default node), and the last read of at least one job partition succeeded.
  The partitions whose last read failed (their master is down or failing
  over) are listed in the answer; with some of them readable the worker is
  still ready — it takes the others' jobs. A worker whose Redis is away
  stays alive and holds its jobs, but is not ready.
- ``/healthz`` — alive: the intake loop is not stuck. It turns at least once
  per blocking read (``read_block_ms``) or Redis timeout, so a loop that has
  not turned for ``STUCK_AFTER_SECONDS`` is stuck — unless it waits for a
  free slot, which a worker with every slot busy rightly does for as long as
  its generations run. (An event loop blocked outright does not answer at
  all, which a probe counts as a failure too.)
- ``/metrics`` — the worker's registry, Prometheus text. Open: this listener
  is for the cluster's scraper and probes, not the internet (it binds
  ``TOKENWIRE_WORKER_METRICS_HOST``, 127.0.0.1 unless set).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

from aiohttp import web

from tokenwire.redis_client import TRANSPORT_ERRORS, RedisClient

#: An intake loop that has not turned for this long is stuck.
STUCK_AFTER_SECONDS = 60.0
#: A readiness PING that takes longer is a Redis that does not answer.
PING_TIMEOUT_SECONDS = 1.0


class IntakeState:
    """What the probes know of the intake loop (the worker keeps it current)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.running = False
        self._beat_at = clock()
        self._waiting_for_slot = False
        self.partitions = 0  # how many it reads (the worker sets it)
        self.unreadable: set[str] = set()  # partitions (streams) whose last read failed

    def partition_read(self, stream: str, ok: bool) -> None:
        """The intake's read of one partition succeeded, or failed."""
        if ok:
            self.unreadable.discard(stream)
        else:
            self.unreadable.add(stream)

    @property
    def reads_any(self) -> bool:
        return len(self.unreadable) < self.partitions or not self.partitions

    def started(self) -> None:
        self.running = True
        self.beat()

    def stopped(self) -> None:
        self.running = False

    def beat(self) -> None:
        self._beat_at = self._clock()

    @contextlib.contextmanager
    def waiting_for_a_slot(self) -> Iterator[None]:
        self._waiting_for_slot = True
        try:
            yield
        finally:
            self._waiting_for_slot = False
            self.beat()

    def stuck_for(self) -> float | None:
        """Seconds the loop has not turned, if that means it is stuck; else None."""
        if self._waiting_for_slot or not self.running:
            return None
        idle = self._clock() - self._beat_at
        return idle if idle > STUCK_AFTER_SECONDS else None


METRICS_RENDER: web.AppKey[Callable[[], bytes]] = web.AppKey("render")
INTAKE = web.AppKey("intake", IntakeState)
REDIS: web.AppKey[RedisClient] = web.AppKey("redis")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS_RENDER](), content_type="text/plain",
                        charset="utf-8")


async def healthz(request: web.Request) -> web.Response:
    stuck = request.app[INTAKE].stuck_for()
    if stuck is not None:
        return web.json_response({"status": "stuck", "seconds": round(stuck, 1)}, status=503)
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    intake = request.app[INTAKE]
    if not intake.running:
        return web.json_response({"status": "not_taking_jobs"}, status=503)
    try:
        async with asyncio.timeout(PING_TIMEOUT_SECONDS):
            await request.app[REDIS].ping()
    except (TimeoutError, *TRANSPORT_ERRORS):
        return web.json_response({"status": "redis_unreachable"}, status=503)
    unreadable = sorted(intake.unreadable)
    if not intake.reads_any:
        return web.json_response({"status": "no_partition_readable",
                                  "unreadable_partitions": unreadable}, status=503)
    return web.json_response({"status": "ready", "unreadable_partitions": unreadable})


def probe_app(render: Callable[[], bytes], intake: IntakeState, redis: RedisClient
              ) -> web.Application:
    app = web.Application()
    app[METRICS_RENDER] = render
    app[INTAKE] = intake
    app[REDIS] = redis
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@contextlib.asynccontextmanager
async def serving(app: web.Application, sock: socket.socket) -> AsyncIterator[None]:
    """Serve ``app`` on the bound ``sock`` for the block."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield
    finally:
        await runner.cleanup()
