"""The README's "The clients you already use" examples, exactly as written there,
run against a real edge and worker: the two ``openai`` SDK programs in a fresh
interpreter, and the AI SDK transport in Node (``ai`` 7) under a small harness
that sends one message through ``AbstractChat``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from tests.conftest import auth_settings, running_worker
from tests.integration.test_ai_sdk import NODE_DIR, needs_node, node_for
from tests.support.processes import ROOT
from tokenwire.apikeys import KeySpec, KeyStore
from tokenwire.edge.app import create_app
from tokenwire.settings import Settings
from tokenwire.worker.providers.simulated import simulated_tokens

#: After the README's block (which defines ``transport``): one message through useChat's engine.
HARNESS = """
import { AbstractChat } from "ai-v7";
class State {
  status = "ready"; error = undefined; messages = [];
  pushMessage(m) { this.messages = [...this.messages, m]; }
  popMessage() { this.messages = this.messages.slice(0, -1); }
  replaceMessage(i, m) { this.messages = this.messages.map((x, j) => (j === i ? m : x)); }
  snapshot(x) { return structuredClone(x); }
}
class Chat extends AbstractChat { constructor(init) { super({ ...init, state: new State() }); } }
const chat = new Chat({ id: chatId, transport });
await chat.sendMessage({ text: "Explain resumable streams" });
const answer = chat.messages.at(-1);
process.stdout.write(JSON.stringify({ status: chat.status, id: answer.id,
  text: answer.parts.filter((p) => p.type === "text").map((p) => p.text).join("") }));
"""


def section_blocks(language: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## The clients you already use\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


@pytest.fixture
def readme_settings(redis_url: str) -> Settings:
    return auth_settings(redis_url, simulated_tokens_per_second=400.0)


@pytest.fixture
async def edge(redis: Redis, readme_settings: Settings) -> AsyncIterator[tuple[str, str]]:
    _, key = await KeyStore(redis).create(KeySpec(tenant="readme"))
    async with running_worker(redis, readme_settings), \
            TestServer(create_app(readme_settings)) as server:
        yield str(server.make_url("")).rstrip("/"), key


async def test_the_openai_sdk_examples(edge: tuple[str, str], tmp_path: Path) -> None:
    url, key = edge
    blocks = section_blocks("python")
    assert len(blocks) == 2, "the section has a Chat Completions and a Responses example"
    expected = "".join(simulated_tokens("Explain resumable streams", 120))
    for block, tail in zip(blocks, ["\n", "\ncompleted\n"], strict=True):
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", block, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "TOKENWIRE_URL": url, "TOKENWIRE_API_KEY": key,
                 "TOKENWIRE_MODEL": "simulated"})
        async with asyncio.timeout(30):
            out, err = await child.communicate()
        assert child.returncode == 0, err.decode()
        assert out.decode() == expected + tail


@needs_node
async def test_the_ai_sdk_example(edge: tuple[str, str]) -> None:
    url, key = edge
    node = node_for("ai-v7")
    assert node is not None, "ai 7 needs Node 22: run `make test` (npm ci in tests/node)"
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/v1/conversations", json={"id": "readme-chat"},
            headers={"Authorization": f"Bearer {key}"}) as created:
        token = (await created.json())["token"]
    (block,) = section_blocks("js")[:1]
    module = (f"const EDGE = {json.dumps(url)};\nconst conversationToken = {json.dumps(token)};\n"
              f'const chatId = "readme-chat";\n'
              + block.replace('from "ai"', 'from "ai-v7"') + HARNESS)
    script = NODE_DIR / f".readme-{os.getpid()}.mjs"
    script.write_text(module)
    try:
        child = await asyncio.create_subprocess_exec(
            node, script.name, cwd=NODE_DIR, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(30):
            out, err = await child.communicate()
    finally:
        script.unlink()
    assert child.returncode == 0, err.decode()
    answer = json.loads(out)
    assert answer["status"] == "ready"
    assert answer["text"] == "".join(simulated_tokens("Explain resumable streams", 120))
