"""What an outside review of the running edge found, one test a finding: each
one failed (or answered 500) before its fix.

The attacker's view: a revoked key's conversation tokens, a token that expired
on an open WebSocket, a model the deployment does not serve, conversations
created without limit, idle WebSockets outside the connection limit, DNS
rebinding against ``tokenwire dev``'s backend stand-in, crafted JWTs and
Origins, lone surrogates, a percent-encoded ``token=``, a weak admin key.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError
from redis.asyncio import Redis

from tests.conftest import ADMIN_KEY, TOKEN_SECRET, auth_settings
from tests.integration.auth_support import (
    ClientFactory,
    bearer,
    create,
    edge,
    edge_settings,
    new_key,
)
from tests.integration.edge_support import EdgeClient
from tests.integration.test_edge_api import error_of
from tests.support.jobs import queued_jobs
from tokenwire import keys
from tokenwire.apikeys import ApiKey
from tokenwire.edge.access_log import redacted
from tokenwire.edge.app import create_app
from tokenwire.edge.auth import KeyCache

__all__ = ["edge", "edge_settings"]  # fixtures, from auth_support


async def conversation(edge: EdgeClient, key: str, **body: Any) -> dict[str, Any]:
    response = await edge.post("/v1/conversations", json=body, headers=bearer(key))
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def post_turn(edge: EdgeClient, conversation_id: str, credential: str,
                    **body: Any) -> aiohttp.ClientResponse:
    return await edge.post(f"/v1/conversations/{conversation_id}/messages",
                           json={"content": "hello", **body}, headers=bearer(credential))


def conversation_token(conversation_id: str, tenant: str, *, exp: float,
                       scopes: str = "read write cancel") -> str:
    """What a backend mints itself (README "Security"), with the edge's secret."""
    now = int(time.time())
    return jwt.encode({"sub": f"conversation:{conversation_id}", "tenant": tenant,
                       "scope": scopes, "aud": "tokenwire", "iat": now, "exp": int(exp)},
                      TOKEN_SECRET, algorithm="HS256")


async def test_a_revoked_keys_conversation_tokens_spend_nothing(edge: EdgeClient,
                                                                redis: Redis) -> None:
    created = await new_key(edge, models=["simulated"])
    chat = await conversation(edge, created["key"], id="kill-switch")
    assert (await post_turn(edge, "kill-switch", chat["token"])).status == 202
    await edge.post("/v1/conversations/kill-switch/cancel", headers=bearer(chat["token"]))
    revoked = await edge.delete(f"/v1/admin/keys/{created['key_id']}",
                                headers=bearer(ADMIN_KEY))
    assert revoked.status == 200
    jobs_before = await queued_jobs(redis)
    for model in ("simulated", "any-expensive-model"):
        refused = await post_turn(edge, "kill-switch", chat["token"], model=model)
        assert await error_of(refused) == (401, "invalid_api_key")
    assert await queued_jobs(redis) == jobs_before  # nothing enqueued, unmetered or not


async def test_an_open_conversation_socket_does_not_outlive_its_token(edge: EdgeClient) -> None:
    key = (await new_key(edge))["key"]
    await conversation(edge, key, id="short-lived")
    # Valid now only thanks to the 5 s clock-skew leeway: expired 2-3 s from now
    # (a whole-second exp; the edge refuses once the clock passes exp + 5).
    exp = int(time.time()) - 2
    token = conversation_token("short-lived", "acme", exp=exp)
    ws = await edge.ws_connect("/v1/conversations/short-lived/ws", params={"token": token})
    async with ws:
        await ws.send_json({"type": "hello"})  # judged as a command while the token is valid
        first = await ws.receive_json(timeout=5)
        assert first["code"] == "unknown_command", first
        # the token's clock must pass; nothing to await
        time.sleep(max(0.0, exp + 5 - time.time()) + 0.2)  # noqa: ASYNC251
        await ws.send_json({"type": "message", "content": "one more, for free?"})
        refused = await ws.receive_json(timeout=5)
        closed = await ws.receive(timeout=5)
    assert (refused["type"], refused["status"], refused["code"]) == (
        "refused", 401, "token_expired")
    assert closed.type == WSMsgType.CLOSE and closed.data == 4401


async def test_only_served_models_run_whoever_asks(edge: EdgeClient, redis: Redis) -> None:
    key = (await new_key(edge))["key"]  # no allowlist of its own
    refused = await edge.post("/v1/streams", json={"prompt": "x", "model": "o1-pro"},
                              headers=bearer(key))
    assert await error_of(refused) == (422, "model_not_found")
    chat = await conversation(edge, key, id="models")
    from_browser = await post_turn(edge, "models", chat["token"], model="o1-pro")
    assert await error_of(from_browser) == (422, "model_not_found")
    assert await queued_jobs(redis) == 0
    await create(edge, key, {"prompt": "x"})  # the default model is served


async def test_creating_conversations_counts_against_requests_per_minute(
        edge: EdgeClient) -> None:
    key = (await new_key(edge, requests_per_minute=2))["key"]
    await conversation(edge, key, id="one")
    await conversation(edge, key, id="two")
    third = await edge.post("/v1/conversations", json={"id": "three"}, headers=bearer(key))
    assert await error_of(third) == (429, "requests_per_minute_exceeded")
    assert "Retry-After" in third.headers
    missing = await edge.get("/v1/conversations/three", headers=bearer(key))
    assert missing.status == 404  # refused: nothing written


async def test_an_idle_conversation_socket_holds_a_connection(edge: EdgeClient) -> None:
    key = (await new_key(edge, max_connections=1))["key"]
    chat = await conversation(edge, key, id="idle")
    async with edge.ws_connect("/v1/conversations/idle/ws", params={"token": chat["token"]}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await edge.ws_connect("/v1/conversations/idle/ws", params={"token": chat["token"]})
        assert refused.value.status == 429


async def test_the_demo_stand_in_answers_only_at_localhost_or_an_ip(
        redis: Redis, redis_url: str, aiohttp_client: ClientFactory) -> None:
    """DNS rebinding: a page on rebind.attacker.example, re-pointed at 127.0.0.1,
    is same-origin to the browser; its requests carry that Host."""
    setup = await aiohttp_client(create_app(auth_settings(redis_url)))
    key = (await new_key(setup))["key"]
    demo = await aiohttp_client(create_app(auth_settings(redis_url, demo_api_key=key)))
    rebound = {"Host": "rebind.attacker.example:8080",
               "Origin": "http://rebind.attacker.example:8080"}
    for path in ("/demo/streams", "/demo/conversations"):
        body = {"prompt": "x"} if path == "/demo/streams" else {}
        response = await demo.post(path, json=body, headers=rebound)
        assert await error_of(response) == (403, "demo_host_not_allowed"), path
    assert await queued_jobs(redis) == 0
    for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080"):
        response = await demo.post("/demo/streams", json={"prompt": "x"}, headers={"Host": host})
        assert response.status == 202, host


async def test_a_token_for_an_algorithm_we_do_not_hold_is_401_not_500(
        redis: Redis, redis_url: str, aiohttp_client: ClientFactory) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    edge = await aiohttp_client(create_app(auth_settings(
        redis_url, token_secret=None, token_public_key=public.decode())))
    header = jwt.utils.base64url_encode(b'{"alg":"ES256","typ":"JWT"}').decode()
    claims = jwt.utils.base64url_encode(b'{"sub":"stream:x"}').decode()
    forged = f"{header}.{claims}.AAAA"
    for path in (f"/v1/streams/{keys.new_stream_id()}", "/v1/conversations/c1"):
        response = await edge.get(path, params={"token": forged})
        assert await error_of(response) == (401, "invalid_token"), path


@pytest.mark.parametrize("origin", ["http://[", "http://[::1", "http://exa mple:x"])
async def test_a_malformed_origin_is_refused_not_a_500(edge: EdgeClient, origin: str) -> None:
    key = (await new_key(edge))["key"]
    stream = await create(edge, key)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await edge.ws_connect(stream["ws_url"], headers={"Origin": origin})
    assert refused.value.status == 403


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"model": "simulated",
                              "messages": [{"role": "user", "content": "a\ud800b"}]}),
    ("/v1/responses", {"model": "simulated", "input": "a\ud800b"}),
    ("/v1/responses", {"model": "simulated", "input": "x", "metadata": {"k": "\udc00"}}),
    ("/v1/ui/chat", {"id": "c", "messages": [
        {"id": "m", "role": "user", "parts": [{"type": "text", "text": "\ud83d"}]}]}),
])
async def test_a_lone_surrogate_is_a_400_on_every_json_route(
        edge: EdgeClient, redis: Redis, path: str, body: dict[str, Any]) -> None:
    key = (await new_key(edge))["key"]
    response = await edge.post(path, json=body, headers=bearer(key))
    assert response.status == 400, await response.text()
    assert await queued_jobs(redis) == 0


def test_the_access_log_redacts_a_percent_encoded_token_name() -> None:
    request = make_mocked_request(
        "GET", "/v1/streams/x/events?%74oken=eyJhbGciOi.eyJzdWIi.c2ln&last_event_id=a.3")
    assert redacted(request) == "/v1/streams/x/events?token=[redacted]&last_event_id=a.3"


async def test_the_key_cache_drops_the_least_recently_used(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tokenwire.edge.auth._CACHE_MAX_ENTRIES", 2)
    looked_up: list[str] = []

    class Store:
        async def get(self, key_id: str) -> ApiKey | None:
            looked_up.append(key_id)
            return None

    cache = KeyCache(Store(), ttl=60)  # type: ignore[arg-type]
    for key_id in ("a", "b", "a", "c", "a", "b"):  # "b" was the least recent when "c" came
        await cache.get(key_id)
    assert looked_up == ["a", "b", "c", "b"]


def test_a_short_admin_key_is_refused(redis_url: str) -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        auth_settings(redis_url, admin_key="x")


async def test_metrics_take_their_own_key(redis: Redis, redis_url: str,
                                          aiohttp_client: ClientFactory) -> None:
    metrics_key = "scraper-" + "m" * 32
    with_own_key = await aiohttp_client(create_app(auth_settings(redis_url,
                                                                 metrics_key=metrics_key)))
    assert (await with_own_key.get("/metrics", headers=bearer(metrics_key))).status == 200
    assert (await with_own_key.get("/metrics", headers=bearer(ADMIN_KEY))).status == 401
    admin_only = await aiohttp_client(create_app(auth_settings(redis_url)))
    assert (await admin_only.get("/metrics", headers=bearer(ADMIN_KEY))).status == 200
    assert (await admin_only.get("/metrics")).status == 401


async def test_a_short_conversation_token_buys_no_longer_stream_tokens(
        edge: EdgeClient) -> None:
    key = (await new_key(edge))["key"]
    await conversation(edge, key, id="ttl")
    expires = int(time.time()) + 120
    token = conversation_token("ttl", "acme", exp=expires)
    response = await post_turn(edge, "ttl", token, token_ttl_seconds=86_400)
    assert response.status == 202, await response.text()
    granted = await response.json()
    assert granted["token_expires_at"] <= expires
