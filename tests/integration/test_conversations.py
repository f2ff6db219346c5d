"""Conversations through a real HTTP client, with auth on, a real worker and Valkey.

What a user checks: the history holds each question and each answer once,
the answer equal to the text that was delivered; one turn at a time; a
cancelled answer kept as delivered, marked so; a failed one adds nothing;
tokens scoped to one conversation; the oldest whole turns trimmed first.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import WSMsgType

from tests.conftest import running_worker
from tests.integration.auth_support import (
    bearer,
    edge,
    edge_settings,
    eventually,
    follow,
    new_key,
    worker,
)
from tests.integration.edge_support import EdgeClient, assemble
from tests.integration.test_edge_api import error_of
from tokenwire.conversations import ConversationStore
from tokenwire.jobs import Job
from tokenwire.redis_client import RedisClient
from tokenwire.settings import Settings
from tokenwire.store import StreamStore
from tokenwire.worker.providers import Delta, UpstreamError

__all__ = ["edge", "edge_settings", "worker"]  # fixtures, from auth_support


#: Conversations keep each change on one slot; on a cluster too.
pytestmark = pytest.mark.both_backends


async def new_conversation(edge: EdgeClient, key: str, **body: Any) -> dict[str, Any]:
    response = await edge.post("/v1/conversations", json=body, headers=bearer(key))
    assert response.status in (200, 201), await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def post(edge: EdgeClient, conversation_id: str, credential: str, content: str,
               **options: Any) -> Any:
    return await edge.post(f"/v1/conversations/{conversation_id}/messages",
                           json={"content": content, **options}, headers=bearer(credential))


async def say(edge: EdgeClient, conversation_id: str, credential: str, content: str,
              **options: Any) -> tuple[dict[str, Any], str]:
    """Post a message, follow its turn to the end; returns the answer and the text."""
    response = await post(edge, conversation_id, credential, content, **options)
    assert response.status == 202, await response.text()
    turn: dict[str, Any] = await response.json()
    transcript = assemble(await follow(edge, turn["events_url"]))
    return turn, transcript.text


async def history(edge: EdgeClient, conversation_id: str, credential: str) -> dict[str, Any]:
    response = await edge.get(f"/v1/conversations/{conversation_id}", headers=bearer(credential))
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_a_conversation_keeps_each_turn_once(edge: EdgeClient, worker: None) -> None:
    key = (await new_key(edge))["key"]
    created = await new_conversation(edge, key, id="chat-1", system="Be brief.")
    assert created["id"] == "chat-1" and created["created"] is True
    token = created["token"]  # what the backend hands the browser
    assert created["ws_url"] == f"/v1/conversations/chat-1/ws?token={token}"
    first, first_text = await say(edge, "chat-1", token, "hello there")
    second, second_text = await say(edge, "chat-1", token, "and again")
    body = await history(edge, "chat-1", token)
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "hello there"), ("assistant", first_text),
        ("user", "and again"), ("assistant", second_text)]
    answers = [m for m in body["messages"] if m["role"] == "assistant"]
    assert [a["stream_id"] for a in answers] == [first["id"], second["id"]]
    assert [a["id"] for a in answers] == [first["message_id"], second["message_id"]]
    assert all(a["status"] == "done" and a["finish_reason"] == "stop" for a in answers)
    assert body["active"] is None
    # The backend's instructions are not the browser's to read; the backend's key reads them.
    assert body["system"] is None
    assert (await history(edge, "chat-1", key))["system"] == "Be brief."
    # the same id again: the same conversation, unchanged, a fresh token
    again = await new_conversation(edge, key, id="chat-1")
    assert again["created"] is False and len((await history(edge, "chat-1", key))["messages"]) == 4


async def test_the_job_carries_the_history(edge: EdgeClient, redis: RedisClient,
                                           edge_settings: Settings) -> None:
    key = (await new_key(edge))["key"]
    await new_conversation(edge, key, id="remember", system="You are terse.")
    seen: list[list[dict[str, str]]] = []

    class Recording:
        name = "recording"

        async def stream(self, job: Job, prefix: str = "") -> AsyncIterator[Delta]:
            seen.append(job.messages)
            yield Delta(text=f"answer {len(seen)}")
            yield Delta(finish_reason="stop")

        async def aclose(self) -> None:
            return None

    async with running_worker(redis, edge_settings, Recording()):
        await say(edge, "remember", key, "one")
        await say(edge, "remember", key, "two")
    assert seen[1] == [{"role": "system", "content": "You are terse."},
                       {"role": "user", "content": "one"},
                       {"role": "assistant", "content": "answer 1"},
                       {"role": "user", "content": "two"}]


async def test_one_turn_at_a_time(edge: EdgeClient, worker: None) -> None:
    key = (await new_key(edge))["key"]
    await new_conversation(edge, key, id="busy")
    first = await post(edge, "busy", key, "a long question")
    assert first.status == 202
    racing = await post(edge, "busy", key, "too soon")
    assert await error_of(racing) == (409, "conversation_busy")
    turn = await first.json()
    await follow(edge, turn["events_url"])
    # right after `done` the next message is accepted (the ended turn is settled first)
    assert (await post(edge, "busy", key, "now")).status == 202
    messages = (await history(edge, "busy", key))["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["a long question", "now"]


async def test_a_cancelled_answer_is_kept_as_delivered(edge: EdgeClient, redis: RedisClient,
                                                       edge_settings: Settings) -> None:
    key = (await new_key(edge))["key"]
    created = await new_conversation(edge, key, id="stop-me")
    slow = edge_settings.model_copy(update={"simulated_tokens_per_second": 20.0})
    async with running_worker(redis, slow):
        response = await post(edge, "stop-me", created["token"], "go on and on")
        turn = await response.json()
        events = edge.get(turn["events_url"])
        async with events as stream:
            await stream.content.readuntil(b"event: token")  # some text is out
            cancelled = await edge.post("/v1/conversations/stop-me/cancel",
                                        headers=bearer(created["token"]))
            assert cancelled.status == 202
            assert (await cancelled.json())["stream_id"] == turn["id"]
        delivered = assemble(await follow(edge, turn["events_url"]))
        assert delivered.terminal is not None
        assert delivered.terminal.data["finish_reason"] == "cancelled"
        await eventually(lambda: _idle(edge, "stop-me", key))
    answer = (await history(edge, "stop-me", key))["messages"][-1]
    assert answer["status"] == "cancelled" and answer["content"] == delivered.text != ""


async def _idle(edge: EdgeClient, conversation_id: str, key: str) -> bool:
    return (await history(edge, conversation_id, key))["active"] is None


async def test_a_failed_answer_adds_nothing(edge: EdgeClient, redis: RedisClient,
                                            edge_settings: Settings) -> None:
    key = (await new_key(edge))["key"]
    await new_conversation(edge, key, id="fails")

    class Failing:
        name = "failing"

        async def stream(self, job: Job, prefix: str = "") -> AsyncIterator[Delta]:
            yield Delta(text="half an ans")
            raise UpstreamError("upstream_400", "the model server rejected the request", False)

        async def aclose(self) -> None:
            return None

    async with running_worker(redis, edge_settings, Failing()):
        turn = await (await post(edge, "fails", key, "break")).json()
        transcript = assemble(await follow(edge, turn["events_url"]))
        assert transcript.terminal is not None and transcript.terminal.type == "error"
        await eventually(lambda: _idle(edge, "fails", key))
    messages = (await history(edge, "fails", key))["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [("user", "break")]


async def test_tokens_and_tenants(edge: EdgeClient, worker: None) -> None:
    key = (await new_key(edge, "acme"))["key"]
    other_tenant = (await new_key(edge, "globex"))["key"]
    await new_conversation(edge, key, id="mine")
    read_only = (await new_conversation(edge, key, id="mine", token_scopes=["read"]))["token"]
    elsewhere = (await new_conversation(edge, key, id="other"))["token"]
    assert await error_of(await post(edge, "mine", read_only, "hi")) == (403, "insufficient_scope")
    for credential in (elsewhere, other_tenant):  # like an unknown conversation
        assert await error_of(await post(edge, "mine", credential, "hi")) == (404, "not_found")
        got = await edge.get("/v1/conversations/mine", headers=bearer(credential))
        assert await error_of(got) == (404, "not_found")
    cannot_create = await edge.post("/v1/conversations", json={}, headers=bearer(read_only))
    assert await error_of(cannot_create) == (403, "api_key_required")
    # the same id in another tenant is another conversation
    theirs = await new_conversation(edge, other_tenant, id="mine")
    assert theirs["created"] is True
    unknown = await post(edge, "nope", key, "hi")
    assert await error_of(unknown) == (404, "not_found")
    bad_id = await edge.get("/v1/conversations/" + "x" * 65, headers=bearer(key))
    assert await error_of(bad_id) == (404, "not_found")
    assert (await history(edge, "mine", key))["messages"] == []  # nothing was written


@pytest.mark.parametrize("body", [{}, {"content": ""}, {"content": "x", "temperature": 9},
                                  {"content": "x", "tools": []}, {"content": 5},
                                  # strictly, as the OpenAPI document says a value is
                                  {"content": "x", "max_tokens": "5"},
                                  {"content": "x", "temperature": True}])
async def test_bad_messages_change_nothing(edge: EdgeClient, body: dict[str, Any]) -> None:
    key = (await new_key(edge))["key"]
    await new_conversation(edge, key, id="strict")
    response = await edge.post("/v1/conversations/strict/messages", json=body,
                               headers=bearer(key))
    assert await error_of(response) == (422, "invalid_message")
    assert (await history(edge, "strict", key))["messages"] == []
    async with edge.ws_connect("/v1/conversations/strict/ws", headers=bearer(key)) as ws:
        await ws.send_json({"type": "message", **body})
        refused = await ws_frames(ws, until="refused")
    assert refused[-1]["code"] == "invalid_message"


@pytest.mark.parametrize("body", [{"token_ttl_seconds": "600"}, {"system": 5},
                                  {"token_scopes": "read"}])
async def test_bad_conversations_are_refused(edge: EdgeClient, redis: RedisClient,
                                             body: dict[str, Any]) -> None:
    key = (await new_key(edge))["key"]
    response = await edge.post("/v1/conversations", json={"id": "never", **body},
                               headers=bearer(key))
    assert await error_of(response) == (422, "invalid_conversation")
    assert await redis.exists(_record_key("acme", "never")) == 0
    integral = await edge.post("/v1/conversations", json={"token_ttl_seconds": 600.0},
                               headers=bearer(key))  # a JSON integer
    assert integral.status == 201


async def test_a_turn_over_a_limit_leaves_the_conversation_as_it_was(edge: EdgeClient) -> None:
    key = (await new_key(edge, max_running=1))["key"]
    await new_conversation(edge, key, id="full")
    first = await post(edge, "full", key, "the first")  # no worker: it stays queued
    assert first.status == 202
    await edge.post("/v1/conversations/full/cancel", headers=bearer(key))  # frees its slot
    held = await edge.post("/v1/streams", json={"prompt": "hold the slot"},
                           headers=bearer(key))
    assert held.status == 202
    as_it_was = await history(edge, "full", key)
    refused = await post(edge, "full", key, "one too many")
    assert await error_of(refused) == (429, "max_running_exceeded")
    assert await history(edge, "full", key) == as_it_was  # last_stream_id, updated_at too


async def test_a_plain_get_of_the_websocket_url_is_a_clear_400(edge: EdgeClient) -> None:
    key = (await new_key(edge))["key"]
    for conversation_id in ((await new_conversation(edge, key))["id"], "never-made"):
        response = await edge.get(f"/v1/conversations/{conversation_id}/ws",
                                  headers=bearer(key))
        assert await error_of(response) == (400, "websocket_required")


async def test_history_drops_the_oldest_whole_turns(redis: RedisClient, edge_settings: Settings,
                                                    aiohttp_client: Any) -> None:
    from tokenwire.edge.app import create_app

    small = edge_settings.model_copy(update={"conversation_max_messages": 5})
    client: EdgeClient = await aiohttp_client(create_app(small))
    key = (await new_key(client))["key"]
    await new_conversation(client, key, id="short")
    async with running_worker(redis, small):
        for n in range(4):
            await say(client, "short", key, f"question {n}", max_tokens=3)
        by_chars = edge_settings.model_copy(update={"conversation_max_chars": 1000})
        client = await aiohttp_client(create_app(by_chars))
        await new_conversation(client, key, id="long")
        for n in range(3):
            await say(client, "long", key, f"question {n}" + "x" * 300, max_tokens=3)
    messages = (await history(client, "short", key))["messages"]
    # 8 messages made, at most 5 kept: whole turns, so 2 turns (4 messages)
    assert [m["content"] for m in messages if m["role"] == "user"] == ["question 2", "question 3"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    kept = (await history(client, "long", key))["messages"]
    assert [m["content"][:10] for m in kept if m["role"] == "user"] == [
        "question 1", "question 2"]  # 3 x 300+ characters do not fit in 1000
    assert sum(len(m["content"]) for m in kept) <= 1000


async def test_settling_twice_appends_once(redis: RedisClient, edge_settings: Settings,
                                           edge: EdgeClient, worker: None) -> None:
    """Two edges (two stores) and the worker race to settle the same ended turn."""
    key = (await new_key(edge))["key"]
    await new_conversation(edge, key, id="race")
    turn, text = await say(edge, "race", key, "who wins?")
    tenant = "acme"
    stores = [ConversationStore(redis, edge_settings) for _ in range(2)]
    streams = StreamStore(redis, edge_settings)
    async def settled_by_the_worker() -> bool:  # after its terminal write: not at once
        return len((await history(edge, "race", key))["messages"]) == 2

    await eventually(settled_by_the_worker, 10)
    # roll the turn back to active to race it again
    await redis.hset(_record_key(tenant, "race"), mapping={"active": turn["id"]})
    await redis.rpop(_record_key(tenant, "race") + ":messages")
    results = await asyncio.gather(*[
        store.settle(tenant, "race", turn["id"], streams) for store in stores for _ in range(5)])
    assert all(results)
    messages = (await history(edge, "race", key))["messages"]
    assert [m["content"] for m in messages] == ["who wins?", text]


def _record_key(tenant: str, conversation_id: str) -> str:
    from tokenwire import keys

    return keys.conversation_keys(tenant, conversation_id)[0]


async def ws_frames(ws: Any, until: str = "done") -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async for message in ws:
        if message.type != WSMsgType.TEXT:
            break
        frames.append(json.loads(message.data))
        if frames[-1]["type"] in (until, "error", "refused"):
            break
    return frames


async def test_websocket_turns_and_resume(edge: EdgeClient, worker: None) -> None:
    key = (await new_key(edge))["key"]
    token = (await new_conversation(edge, key, id="sock"))["token"]
    async with edge.ws_connect("/v1/conversations/sock/ws", params={"token": token}) as ws:
        await ws.send_json({"type": "message", "content": "first"})
        frames = await ws_frames(ws)
        await ws.send_json({"type": "message", "content": "second"})
        head = await ws_frames(ws, until="token")
        await ws.send_json({"type": "message", "content": "too soon"})
        refused = await ws_frames(ws, until="refused")
    assert frames[0]["type"] == "turn" and frames[-1]["type"] == "done"
    assert refused[-1] == {"type": "refused", "status": 409, "code": "conversation_busy",
                           "message": refused[-1]["message"]}
    first_text = "".join(f["content"] for f in frames if f["type"] == "token")
    # dropped mid-turn: resume with the last cursor, on a new socket
    cursor = [f for f in head + refused if "id" in f][-1]["id"]
    seen = [f for f in head + refused if f["type"] == "token"]
    async with edge.ws_connect("/v1/conversations/sock/ws",
                               params={"token": token, "last_event_id": cursor}) as ws:
        rest = await ws_frames(ws)
    assert rest[0]["type"] == "turn" and rest[0]["stream_id"] == head[0]["stream_id"]
    assert [f["type"] for f in rest[1:]].count("start") == 0  # no replay, no reset
    second_text = "".join(f["content"] for f in seen + rest if f["type"] == "token")
    messages = (await history(edge, "sock", key))["messages"]
    assert [m["content"] for m in messages] == ["first", first_text, "second", second_text]
