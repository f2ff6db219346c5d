"""The README's ``EventSource`` snippet in headless Chromium, through a Redis
outage longer than the edge holds a stream (``TOKENWIRE_EDGE_REDIS_OUTAGE_SECONDS``):
Redis goes down, the edge lets the browser go with a ``reconnect`` notice,
answers its reconnects with 200 + ``retry:`` (never a status that makes
``EventSource`` give up), and Redis comes back — with its data, or empty.

The page's ``EventSource`` must never reach readyState 2 before ``done``, and
the page must end with the model's exact text: continued where it stopped
(with its data), or after one ``reset``, the whole answer (empty: the worker
rebuilt the stream from the job it held).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.chaos.cluster import Valkey
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, needs_chromium, open_snippet, page_state
from tests.support.processes import AUTH_ENV, Process, create_key, free_port, tokenwire, wait_ready
from tokenwire.worker.providers.simulated import simulated_tokens

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PROMPT = "a browser through a Redis outage"


@needs_chromium
@pytest.mark.parametrize("comes_back", ["with-its-data", "empty"])
async def test_the_readme_snippet_rides_out_a_long_redis_outage(
    comes_back: str, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    valkey = Valkey(tmp_path, {})
    valkey.start()
    await valkey.wait_ready()
    env = {"TOKENWIRE_REDIS_URL": valkey.url, "TOKENWIRE_PROVIDER": "simulated",
           "TOKENWIRE_SIMULATED_TOKENS_PER_SECOND": "15",  # ~8 s: the outage falls inside
           "TOKENWIRE_SIMULATED_FIRST_TOKEN_DELAY_MS": "0", "TOKENWIRE_DEFAULT_BUFFER": "word",
           "TOKENWIRE_EDGE_REDIS_OUTAGE_SECONDS": "1", "TOKENWIRE_SSE_RETRY_MS": "300",
           "TOKENWIRE_REDIS_SOCKET_TIMEOUT": "1", "TOKENWIRE_READ_BLOCK_MS": "200", **AUTH_ENV}
    key = create_key(env, "outage")["key"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes: list[Process] = [tokenwire("worker", ["worker"], env, tmp_path),
                                tokenwire("edge", ["edge", "--port", str(port)], env, tmp_path)]
    try:
        await wait_ready(f"{base}/readyz", processes[1])
        async with aiohttp.ClientSession() as session, \
                session.post(f"{base}/v1/streams", json={"prompt": PROMPT},
                             headers={"Authorization": f"Bearer {key}"}) as response:
            events_url = (await response.json())["events_url"]  # the backend hands this out
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                       args=CHROMIUM_ARGS)
            page = await open_snippet(browser, base, events_url)
            await page.wait_for_function("text.length > 20", timeout=20_000)

            if comes_back == "empty":
                valkey.kill()
            else:  # a clean stop: Valkey writes its AOF out, and loads it back
                assert valkey.process is not None
                valkey.process.stop(signal.SIGTERM)
            await asyncio.sleep(5)  # five times the edge's hold
            during = await page_state(page)
            valkey.start(empty=comes_back == "empty")
            await valkey.wait_ready()

            await page.wait_for_function("seen.done", timeout=60_000)
            state = await page_state(page)
            await page.screenshot(path=str(tmp_path / f"{comes_back}.png"))
            await browser.close()
    finally:
        for process in reversed(processes):
            process.stop()
        valkey.stop()
    assert 2 not in during["errors"] and 2 not in state["errors"], state["errors"]
    assert during["errors"], "the outage did not reach the browser"
    assert state["text"] == "".join(simulated_tokens(PROMPT, 120))
    assert state["resets"] == (1 if comes_back == "empty" else 0)
