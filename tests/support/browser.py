"""Headless Chromium (the system's, driven by Playwright) running the README's
own ``EventSource`` snippet, served on the origin under test."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.support.processes import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and sys.platform == "linux",
    reason="needs Chromium: `make test` installs it with apt-get as root")


def readme_snippet() -> str:
    """The README's browser snippet, exactly as a reader would copy it."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"plain `EventSource`.*?```js\n(.*?)```", readme, flags=re.S)
    assert found, "README has no EventSource snippet"
    return found.group(1)


def snippet_page(events_url: str) -> str:
    """The snippet as is, between a line that hands it the stream's URL (as a
    backend does: it carries the stream token) and one that
    records what a test needs to see: every readyState the page's
    ``EventSource`` passes through on an ``error`` (2 means it gave up), the
    resets, and whether ``done`` arrived."""
    return f"""<!doctype html><meta charset="utf-8"><title>snippet</title>
<script>const eventsUrl = {json.dumps(events_url)};</script>
<script>
{readme_snippet()}
</script>
<script>
window.seen = {{errors: [], resets: 0, done: false}};
source.addEventListener("error", () => seen.errors.push(source.readyState));
source.addEventListener("reset", () => {{ seen.resets += 1; }});
source.addEventListener("done", () => {{ seen.done = true; }});
</script>"""


async def open_snippet(browser: Browser, origin: str, events_url: str) -> Page:
    """A page on ``origin`` (so ``events_url``, relative as the edge gives it, reaches the edge)
    whose document is ``snippet_page``."""
    page = await browser.new_page()
    url = f"{origin}/__snippet__"
    await page.route(url, lambda route: route.fulfill(body=snippet_page(events_url),
                                                      content_type="text/html"))
    await page.goto(url)
    return page


async def page_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate(
        "({text, readyState: source.readyState, ...window.seen})")
    return state


async def screenshot(page: Page, path: Path) -> None:
    await page.screenshot(path=str(path), full_page=True)
