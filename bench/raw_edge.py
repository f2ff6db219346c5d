"""The ceiling for a Python edge: an aiohttp SSE broadcaster with no Redis.

It generates the same timestamped token events itself (N streams x R tokens/s,
staggered) and fans each out to the stream's local subscribers' queues."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp_sse import sse_response

from bench.harness import serve_reference_edge

SUBSCRIBERS = web.AppKey("subscribers", dict[str, set[asyncio.Queue[tuple[int, str]]]])


async def events(request: web.Request) -> web.StreamResponse:
    stream_id = request.match_info["stream_id"]
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue(1024)
    subscribers = request.app[SUBSCRIBERS].setdefault(stream_id, set())
    subscribers.add(queue)
    try:
        async with sse_response(request) as response:
            while True:
                seq, data = await queue.get()
                await response.send(data, id=f"raw.{seq}", event="token")
    finally:
        subscribers.discard(queue)


def generator(ids: list[str], rate: float):  # type: ignore[no-untyped-def]
    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(tick(app, ids, rate))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return context


async def tick(app: web.Application, ids: list[str], rate: float) -> None:
    period = 1.0 / rate
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5
    due = [start + period * i / len(ids) for i in range(len(ids))]
    seqs = [1] * len(ids)
    subscribers = app[SUBSCRIBERS]
    while True:
        now = loop.time()
        for i, t in enumerate(due):
            if t > now:
                continue
            data = json.dumps({"content": f"t{time.time_ns()} "})
            seqs[i] += 1
            due[i] += period
            for queue in subscribers.get(ids[i], ()):
                if not queue.full():
                    queue.put_nowait((seqs[i], data))
        await asyncio.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ids", type=Path, required=True)
    parser.add_argument("--rate", type=float, required=True)
    args = parser.parse_args()
    app = web.Application()
    app[SUBSCRIBERS] = {}
    app.cleanup_ctx.append(generator(args.ids.read_text().split(), args.rate))
    serve_reference_edge(app, events, args.port)


if __name__ == "__main__":
    main()
