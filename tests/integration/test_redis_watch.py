"""The edge's Redis watch leaves nothing running once closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from tokenwire.edge.redis_watch import RedisWatch


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts and never answers: a Redis command sent to it
    stays in flight."""
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def nothing() -> None:
    pass


async def test_closing_ends_the_check_in_flight() -> None:
    """A check is shielded from its callers' cancels; ``close`` must still end
    it, or it goes on using the edge's Redis client after the edge closed it."""
    async with silent_server() as port:
        redis = Redis(host="127.0.0.1", port=port, socket_timeout=30)
        watch = RedisWatch(redis, nothing)
        caller = asyncio.create_task(watch.check())
        await asyncio.sleep(0)  # the check starts and sends INFO
        caller.cancel()  # as a handler cancelled mid-request
        await asyncio.gather(caller, return_exceptions=True)
        async with asyncio.timeout(5):
            await watch.close()
        still_running = [task for task in asyncio.all_tasks()
                         if "_check_once" in repr(task.get_coro())]
        await redis.aclose()
    assert still_running == []
