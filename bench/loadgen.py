"""Hold many SSE (and WebSocket) clients over real sockets; measure per-token latency.

Fast clients parse as little as possible (a regex for ``t<19 digits> `` per
chunk) so the load generator disturbs the machine as little as it can. Slow
clients read a few hundred bytes at a time with a tiny receive buffer; when the
edge disconnects them they resume with ``Last-Event-ID``, and at the end their
assembled text is compared with ``GET /v1/streams/{id}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import resource
import socket
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tokenwire.client import ClientEvent, Transcript
from tokenwire.gc_tuning import tune_for_service

STAMP = re.compile(rb"t(\d{19}) ")
STAMP_TEXT = re.compile(r"t(\d{19}) ")


@dataclass
class Stats:
    measuring: bool = False
    latencies_ms: list[float] = field(default_factory=list)
    frames: int = 0
    tokens: int = 0
    connected: int = 0
    disconnects: int = 0

    def record(self, now_ns: int, stamps: list[bytes] | list[str], frames: int) -> None:
        if not self.measuring:
            return
        self.frames += frames
        self.tokens += len(stamps)
        self.latencies_ms.extend((now_ns - int(s)) / 1e6 for s in stamps)


async def open_sse(host: str, port: int, stream_id: str, last_id: str | None = None,
                   rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
    extra = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
    writer.write(f"GET /v1/streams/{stream_id}/events HTTP/1.1\r\nHost: {host}\r\n"
                 f"Accept: text/event-stream\r\n{extra}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        writer.close()
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return reader, writer


async def fast_sse(host: str, port: int, stream_id: str, stats: Stats) -> None:
    reader, writer = await open_sse(host, port, stream_id)
    stats.connected += 1
    try:
        while chunk := await reader.read(65536):
            stats.record(time.time_ns(), STAMP.findall(chunk), chunk.count(b"event: token"))
    finally:
        stats.disconnects += 1
        writer.close()


async def fast_ws(session: aiohttp.ClientSession, base: str, stream_id: str, stats: Stats
                  ) -> None:
    async with session.ws_connect(f"{base.replace('http', 'ws')}/v1/streams/{stream_id}/ws",
                                  max_msg_size=0) as ws:
        stats.connected += 1
        async for message in ws:
            stats.record(time.time_ns(), STAMP_TEXT.findall(message.data), 1)
    stats.disconnects += 1


def parse_events(block: bytes) -> list[ClientEvent]:
    events = []
    for raw in block.split(b"\r\n\r\n"):
        fields: dict[str, str] = {}
        for line in raw.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name in ("id", "event", "data"):
                fields[name] = value
        if "data" in fields:
            events.append(ClientEvent(fields.get("id", ""), fields.get("event", "message"),
                                      json.loads(fields["data"])))
    return events


@dataclass
class SlowResult:
    stream_id: str
    transcript: Transcript = field(default_factory=Transcript)
    reconnects: int = 0
    slow_disconnects: int = 0


async def slow_sse(host: str, port: int, stream_id: str, result: SlowResult) -> None:
    """Read 256 bytes every 250 ms; resume on every disconnect until the end."""
    transcript = result.transcript
    while transcript.terminal is None:
        try:
            reader, writer = await open_sse(host, port, stream_id, transcript.last_id, 4096)
        except (ConnectionError, OSError):
            await asyncio.sleep(0.5)
            continue
        buffer = b""
        try:
            while chunk := await reader.read(256):
                buffer += chunk
                complete, sep, buffer = buffer.rpartition(b"\r\n\r\n")
                for event in parse_events(complete + sep):
                    if event.type == "reconnect":  # the response ends; resume
                        if event.data.get("reason") == "slow_consumer":
                            result.slow_disconnects += 1
                        continue
                    transcript.apply(event)
                if transcript.terminal is not None:
                    break
                await asyncio.sleep(0.25)
        finally:
            writer.close()
        result.reconnects += 1


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "p99.9": at(0.999),
            "max": round(ordered[-1], 3), "mean": round(statistics.fmean(ordered), 3)}


async def run(args: argparse.Namespace) -> dict[str, object]:
    host, ports = args.host, [int(p) for p in str(args.port).split(",")]
    base = f"http://{host}:{ports[0]}"
    ids = args.ids.read_text().split()
    rng = random.Random(7)
    stats, tasks = Stats(), []
    slow_results: list[SlowResult] = []
    gate = asyncio.Semaphore(200)  # ramp connections up without a SYN storm
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def start(coro) -> None:  # type: ignore[no-untyped-def]
        async with gate:
            task = asyncio.create_task(coro)
            await asyncio.sleep(0)
        tasks.append(task)

    for index, stream_id in enumerate(ids):
        for viewer in range(args.viewers):
            # Several edges: clients spread over them, viewers of a stream too.
            port = ports[(index + viewer) % len(ports)]
            roll = rng.random()
            if roll < args.slow_fraction:
                slow_results.append(SlowResult(stream_id))
                await start(slow_sse(host, port, stream_id, slow_results[-1]))
            elif roll < args.slow_fraction + args.ws_fraction:
                await start(fast_ws(session, f"http://{host}:{port}", stream_id, stats))
            else:
                await start(fast_sse(host, port, stream_id, stats))
    clients = len(tasks)
    await asyncio.sleep(args.warmup)  # the orchestrator's ramp allowance covers connecting
    window_start = time.time()
    stats.measuring = True
    await asyncio.sleep(args.seconds)
    stats.measuring = False
    window_end = time.time()
    verified = await verify(session, base, slow_results) if slow_results else None
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()
    return {
        "clients": clients, "connected": stats.connected, "disconnects": stats.disconnects,
        "window": [window_start, window_end], "frames": stats.frames, "tokens": stats.tokens,
        "latency_ms": percentiles(stats.latencies_ms), "slow": verified,
    }


async def verify(session: aiohttp.ClientSession, base: str, results: list[SlowResult]
                 ) -> dict[str, object]:
    """Slow clients finish (the producer ends every stream), then compare text."""
    deadline = time.monotonic() + 90
    for result in results:  # poll: the clients are plain tasks with no completion event
        while result.transcript.terminal is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
    exact = prefix = violations = 0
    for result in results:
        async with session.get(f"{base}/v1/streams/{result.stream_id}") as response:
            text = (await response.json())["text"]
        mine = result.transcript.text
        if result.transcript.terminal is not None:
            exact += mine == text
            violations += mine != text
        else:  # still catching up when time ran out: what it has must be exact so far
            prefix += text.startswith(mine)
            violations += not text.startswith(mine)
    return {"clients": len(results), "exact": exact, "unfinished_prefix_exact": prefix,
            "violations": violations,
            "reconnects": sum(r.reconnects for r in results),
            "slow_consumer_events": sum(r.slow_disconnects for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", required=True, help="an edge's port, or several: 8080,8081")
    parser.add_argument("--ids", type=Path, required=True)
    parser.add_argument("--viewers", type=int, default=1)
    parser.add_argument("--ws-fraction", type=float, default=0.0)
    parser.add_argument("--slow-fraction", type=float, default=0.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tune_for_service()  # its own full collections would show up as every design's latency
    args.out.write_text(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
