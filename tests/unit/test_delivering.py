"""The census counts a delivery exactly while it lasts, however it ends (the
plain-object ``delivering`` has no generator's ``finally`` to lean on)."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
from aiohttp import web

from tokenwire.apikeys import KeyStore
from tokenwire.edge import keys as appkeys
from tokenwire.edge.auth import Authenticator, KeyCache
from tokenwire.edge.census import ViewerCensus
from tokenwire.edge.connections import ConnectionLeases
from tokenwire.edge.delivering import delivering
from tokenwire.limits import KeyLimiter
from tokenwire.settings import Settings


def edge_app() -> web.Application:
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    settings = Settings(_env_file=None, auth_disabled=True)
    auth = Authenticator(settings, KeyCache(KeyStore(redis), 1.0))
    app = web.Application()
    app[appkeys.CONNECTIONS] = ConnectionLeases(KeyLimiter(redis, settings), auth, 30.0)
    app[appkeys.CENSUS] = ViewerCensus(redis, "edge:1")
    return app


async def test_a_delivery_is_counted_while_it_lasts() -> None:
    app = edge_app()
    census = app[appkeys.CENSUS]
    async with delivering(app, "s1", None, "sse"), delivering(app, "s1", None, "ws"):
        assert census.viewers["s1"] == 2
        assert census.by_protocol["sse"] == census.by_protocol["ws"] == 1
    assert "s1" not in census.viewers
    assert census.connections() == 0


async def test_a_delivery_that_fails_or_is_cancelled_is_no_longer_counted() -> None:
    app = edge_app()
    census = app[appkeys.CENSUS]
    with pytest.raises(RuntimeError):
        async with delivering(app, "s1", None, "sse"):
            raise RuntimeError("the handler failed")
    entered = asyncio.Event()

    async def follow() -> None:
        async with delivering(app, "s2", None, "sse"):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(follow())
    await entered.wait()
    assert census.viewers["s2"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not census.viewers
    assert census.connections() == 0
