"""``tokenwire dev``: one command runs Valkey, a worker and an edge; SIGTERM stops
all of it and leaves no child process behind."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.support.processes import free_port, tokenwire, wait_ready
from tokenwire.client import AsyncTokenwireClient

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_dev_serves_the_demo_and_stops_cleanly(tmp_path: Path, sig: int) -> None:
    port = free_port()
    # A production setting in the environment: dev still runs its own standalone Valkey.
    dev = tokenwire("dev", ["dev", "--port", str(port)],
                    {"TOKENWIRE_SIMULATED_TOKENS_PER_SECOND": "500",
                     "TOKENWIRE_REDIS_MODE": "cluster"}, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready(f"{base}/readyz", dev)
        assert f"Tokenwire demo: {base}/" in dev.log()
        valkey_pid = int(re.search(r"valkey running at \S+ \(pid (\d+)\)", dev.log()).group(1))  # type: ignore[union-attr]
        assert alive(valkey_pid)
        # Auth is on, with a dev key made for the session and shown once.
        [key] = re.findall(r"dev API key \(tenant 'dev', key id \w+\): (twk_\S+)", dev.log())
        async with aiohttp.ClientSession() as anonymous:
            async with anonymous.post(f"{base}/v1/streams", json={"prompt": "x"}) as refused:
                assert refused.status == 401
            # The demo page's backend stand-in: the answer's URL is all a browser needs.
            async with anonymous.post(f"{base}/demo/streams", json={"prompt": "demo"}) as demo:
                assert demo.status == 202
                events_url = (await demo.json())["events_url"]
            async with anonymous.get(base + events_url) as events:
                assert events.status == 200 and b"event: done" in await events.read()
        async with AsyncTokenwireClient(base, api_key=key) as client:
            stream_id = (await client.create({"prompt": "hello from the demo"})).id
            transcript = await client.follow(stream_id)
        assert transcript.terminal is not None and transcript.terminal.type == "done"
        assert transcript.text
    finally:
        code = dev.stop(sig, timeout=15)
    assert code == 0, dev.log()
    assert dev.log().count(key) == 1  # the start line, and nowhere else
    # dev stops (and reaps) Valkey before it exits: nothing to wait for.
    assert not alive(valkey_pid), "the embedded Valkey outlived tokenwire dev"
