"""Helpers and fixtures of the tests of auth and limits: an edge with auth on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, AUTH_VALUES, SettingsFactory, running_worker
from tests.integration.edge_support import EdgeClient
from tokenwire.client import ClientEvent, parse_sse
from tokenwire.edge.app import create_app
from tokenwire.redis_client import RedisClient
from tokenwire.settings import Settings

ClientFactory = Callable[..., Any]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@pytest.fixture
def edge_settings(settings_factory: SettingsFactory) -> Settings:
    """Auth on; the test's backend (standalone, or a cluster under ``both_backends``)."""
    return settings_factory(**AUTH_VALUES, simulated_tokens_per_second=200.0,
                            default_buffer="none")


@pytest.fixture
async def edge(redis: RedisClient, edge_settings: Settings, aiohttp_client: ClientFactory
               ) -> EdgeClient:
    """An edge with auth on and no worker: streams stay queued."""
    client: EdgeClient = await aiohttp_client(create_app(edge_settings))
    return client


@pytest.fixture
async def worker(redis: RedisClient, edge_settings: Settings) -> AsyncIterator[None]:
    async with running_worker(redis, edge_settings):
        yield


async def new_key(edge: EdgeClient, tenant: str = "acme", **spec: Any) -> dict[str, Any]:
    response = await edge.post("/v1/admin/keys", json={"tenant": tenant, **spec}, headers=ADMIN)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def create(edge: EdgeClient, key: str, body: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await edge.post("/v1/streams", json=body or {"prompt": "hello edge"},
                               headers={**bearer(key), **(headers or {})})
    assert response.status == 202, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def follow(edge: EdgeClient, url: str, headers: dict[str, str] | None = None
                 ) -> list[ClientEvent]:
    """Read an events URL as handed out (its ?token= included) to the end."""
    response = await edge.get(url, headers=headers or {})
    assert response.status == 200, await response.text()
    return [ClientEvent(i or "", t, json.loads(d)) async for i, t, d in parse_sse(response.content)]




async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll Redis-side state another task changes (bounded: fails after ``within`` s)."""
    for _ in range(int(within / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {within} s")
