"""API keys, stream tokens and tenants through a real HTTP client, on a real Valkey.

Every refusal is checked as a user sees it: status, error code, and that it
changed nothing. A stream of another tenant, or another stream than a token's,
must be indistinguishable from an unknown stream."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from tests.conftest import TOKEN_SECRET, auth_settings
from tests.integration.auth_support import (
    ADMIN,
    bearer,
    create,
    edge,
    edge_settings,
    follow,
    new_key,
    worker,
)
from tests.integration.edge_support import EdgeClient, assemble, read_events
from tests.integration.test_edge_api import error_of, expected_text, ws_events
from tests.support.jobs import DEFAULT_PARTITIONS, queued_jobs
from tokenwire import keys
from tokenwire.edge.app import InsecureSettings, create_app
from tokenwire.jobqueue import partitions_of
from tokenwire.settings import Settings

ClientFactory = Callable[..., Any]
__all__ = ["edge", "edge_settings", "worker"]  # fixtures, from auth_support


# --- credentials ---------------------------------------------------------------------------


async def test_the_edge_refuses_to_run_without_auth(redis_url: str) -> None:
    with pytest.raises(InsecureSettings, match="TOKENWIRE_TOKEN_SECRET"):
        create_app(auth_settings(redis_url, token_secret=None))


async def test_creating_needs_a_valid_api_key(edge: EdgeClient, redis: Redis) -> None:
    key = (await new_key(edge))["key"]
    no_key = await edge.post("/v1/streams", json={"prompt": "x"})
    assert await error_of(no_key) == (401, "unauthorized")
    assert no_key.headers["WWW-Authenticate"].startswith("Bearer")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for credential in (forged, "twk_nope", "twk_" + "a" * 16 + "_" + "b" * 43, "Basic abc"):
        response = await edge.post("/v1/streams", json={"prompt": "x"}, headers=bearer(credential))
        assert (await error_of(response))[0] == 401
    token = (await create(edge, key))["token"]
    response = await edge.post("/v1/streams", json={"prompt": "x"}, headers=bearer(token))
    assert await error_of(response) == (403, "api_key_required")
    assert await queued_jobs(redis) == 1  # only the stream created with the key


async def test_the_answer_carries_a_token_and_urls_that_work_as_they_are(
    edge: EdgeClient, worker: None
) -> None:
    key = (await new_key(edge))["key"]
    created = await create(edge, key, {"prompt": "hello edge", "token_ttl_seconds": 600})
    stream_id, token = created["id"], created["token"]
    assert created["events_url"] == f"/v1/streams/{stream_id}/events?token={token}"
    assert created["ws_url"] == f"/v1/streams/{stream_id}/ws?token={token}"
    assert abs(created["token_expires_at"] - (time.time() + 600)) < 5
    claims = jwt.decode(token, TOKEN_SECRET, algorithms=["HS256"], audience="tokenwire")
    assert claims["sub"] == f"stream:{stream_id}" and claims["tenant"] == "acme"
    assert claims["scope"] == "read"
    events = await follow(edge, created["events_url"])  # no header: the URL is enough
    assert assemble(events).text == expected_text("hello edge")
    # Resume, as EventSource does: the same URL plus Last-Event-ID.
    rest = await follow(edge, created["events_url"], {"Last-Event-ID": events[3].id})
    assert assemble(events[:4], rest).text == expected_text("hello edge")
    status = await edge.get(f"/v1/streams/{stream_id}", headers=bearer(token))
    assert (await status.json())["text"] == expected_text("hello edge")
    async with edge.ws_connect(created["ws_url"]) as ws:
        assert assemble(await ws_events(ws)).text == expected_text("hello edge")


async def test_a_read_token_cannot_cancel_and_a_cancel_token_can(edge: EdgeClient) -> None:
    key = (await new_key(edge))["key"]
    reader = await create(edge, key)
    cancel_path = f"/v1/streams/{reader['id']}/cancel"
    refused = await edge.post(cancel_path, headers=bearer(reader["token"]))
    assert await error_of(refused) == (403, "insufficient_scope")
    status = await (await edge.get(f"/v1/streams/{reader['id']}", headers=bearer(key))).json()
    assert status["status"] == "queued"
    canceller = await create(edge, key, {"prompt": "x", "token_scopes": ["read", "cancel"]})
    done = await edge.post(f"/v1/streams/{canceller['id']}/cancel?token={canceller['token']}")
    assert done.status == 202 and (await done.json())["status"] == "cancelled"


@pytest.mark.parametrize("body", [
    {"prompt": "x", "token_scopes": ["write"]},
    {"prompt": "x", "token_scopes": []},
    {"prompt": "x", "token_ttl_seconds": 10},
    {"prompt": "x", "token_ttl_seconds": 10**7},
    {"prompt": "x", "token_ttl_seconds": "long"},
])
async def test_bad_token_requests_are_422_and_change_nothing(
    edge: EdgeClient, redis: Redis, body: dict[str, Any]
) -> None:
    key = (await new_key(edge))["key"]
    response = await edge.post("/v1/streams", json=body, headers=bearer(key))
    assert await error_of(response) == (422, "invalid_job")
    assert await queued_jobs(redis) == 0


async def test_a_token_for_one_stream_is_refused_on_another_and_after_expiry(
    edge: EdgeClient
) -> None:
    key = (await new_key(edge))["key"]
    first, second = await create(edge, key), await create(edge, key)
    a_token, b_id = first["token"], second["id"]
    unknown = "A" * 22
    for stream_id in (b_id, unknown):  # another stream answers exactly as an unknown one
        for method, path in (("GET", f"/v1/streams/{stream_id}"),
                             ("GET", f"/v1/streams/{stream_id}/events"),
                             ("POST", f"/v1/streams/{stream_id}/cancel")):
            response = await edge.request(method, path, params={"token": a_token})
            assert await error_of(response) == (404, "not_found")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await edge.ws_connect(f"/v1/streams/{stream_id}/ws", params={"token": a_token})
        assert refused.value.status == 404
    now = int(time.time())
    expired = jwt.encode({"sub": f"stream:{first['id']}", "tenant": "acme", "scope": "read",
                          "aud": "tokenwire", "iat": now - 7200, "exp": now - 60},
                         TOKEN_SECRET, algorithm="HS256")
    response = await edge.get(f"/v1/streams/{first['id']}/events", params={"token": expired})
    assert await error_of(response) == (401, "token_expired")


@pytest.mark.parametrize("forge", ["other_secret", "other_audience", "alg_none", "no_exp",
                                   "garbage"])
async def test_forged_tokens_are_401(edge: EdgeClient, forge: str) -> None:
    key = (await new_key(edge))["key"]
    stream_id = (await create(edge, key))["id"]
    now = int(time.time())
    claims: dict[str, Any] = {"sub": f"stream:{stream_id}", "tenant": "acme", "scope": "read",
                              "aud": "tokenwire", "iat": now, "exp": now + 600}
    if forge == "other_secret":
        token = jwt.encode(claims, "another-secret-" + "x" * 32, algorithm="HS256")
    elif forge == "other_audience":
        token = jwt.encode({**claims, "aud": "someone-else"}, TOKEN_SECRET, algorithm="HS256")
    elif forge == "alg_none":
        token = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    elif forge == "no_exp":
        token = jwt.encode({k: v for k, v in claims.items() if k != "exp"}, TOKEN_SECRET,
                           algorithm="HS256")
    else:
        token = "eyJhbGciOiJIUzI1NiJ9.not-a-token.at-all"
    response = await edge.get(f"/v1/streams/{stream_id}/events", headers=bearer(token))
    assert await error_of(response) == (401, "invalid_token")


# --- tenants ----------------------------------------------------------------------------------


async def test_another_tenant_sees_nothing_and_changes_nothing(
    edge: EdgeClient, redis: Redis
) -> None:
    mine, theirs = (await new_key(edge, "acme"))["key"], (await new_key(edge, "globex"))["key"]
    stream_id = (await create(edge, mine))["id"]
    await redis.hset(keys.meta(stream_id), mapping={"epoch": "e1", "last_seq": 3})
    unknown = "B" * 22
    for sid in (stream_id, unknown):  # each answer identical for a foreign and an unknown id
        for method, path, headers, expected in (
            ("GET", f"/v1/streams/{sid}", {}, (404, "not_found")),
            ("GET", f"/v1/streams/{sid}/events", {}, (404, "not_found")),
            ("POST", f"/v1/streams/{sid}/cancel", {}, (404, "not_found")),
            ("GET", f"/v1/streams/{sid}/events", {"Last-Event-ID": "e1.2"}, (410, "gone")),
        ):
            response = await edge.request(method, path, headers={**bearer(theirs), **headers})
            assert await error_of(response) == expected, (sid, path)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await edge.ws_connect(f"/v1/streams/{sid}/ws", headers=bearer(theirs))
        assert refused.value.status == 404
    status = await (await edge.get(f"/v1/streams/{stream_id}", headers=bearer(mine))).json()
    assert status["status"] == "queued"  # the foreign cancel did nothing


async def test_an_idempotency_key_is_scoped_to_the_tenant(edge: EdgeClient, redis: Redis
                                                          ) -> None:
    acme, globex = (await new_key(edge, "acme"))["key"], (await new_key(edge, "globex"))["key"]
    same = {"Idempotency-Key": "order-42"}
    first = await create(edge, acme, {"prompt": "a"}, same)
    theirs = await create(edge, globex, {"prompt": "a"}, same)
    again = await create(edge, acme, {"prompt": "a"}, same)
    assert theirs["id"] != first["id"] and again["id"] == first["id"]
    assert await queued_jobs(redis) == 2
    status = await edge.get(f"/v1/streams/{theirs['id']}", headers=bearer(acme))
    assert status.status == 404


# --- the admin API -----------------------------------------------------------------------------


async def test_admin_api_issues_lists_and_revokes_keys(edge: EdgeClient, redis: Redis) -> None:
    created = await new_key(edge, "acme", models=["simulated"], max_running=2,
                            requests_per_minute=10, tokens_per_minute=1000, max_connections=5)
    key_id, key = created["key_id"], created["key"]
    assert key.startswith(f"twk_{key_id}_") and created["tenant"] == "acme"
    assert created["models"] == ["simulated"] and created["max_connections"] == 5
    listing = await (await edge.get("/v1/admin/keys", headers=ADMIN)).json()
    assert [k["key_id"] for k in listing["keys"]] == [key_id]
    assert "key" not in listing["keys"][0] and key.split("_")[-1] not in str(listing)
    stored = await redis.hgetall(keys.api_key(key_id))
    assert key.split("_", 2)[2] not in str(stored)  # hashed, never plain
    await create(edge, key)
    revoked = await edge.delete(f"/v1/admin/keys/{key_id}", headers=ADMIN)
    assert revoked.status == 200 and (await revoked.json()) == {"key_id": key_id, "revoked": True}
    again = await edge.delete(f"/v1/admin/keys/{key_id}", headers=ADMIN)
    assert await error_of(again) == (404, "not_found")
    await asyncio.sleep(2.1)  # this edge's lookup cache (key_cache_seconds) ages out
    response = await edge.post("/v1/streams", json={"prompt": "x"}, headers=bearer(key))
    assert await error_of(response) == (401, "invalid_api_key")


@pytest.mark.parametrize(("headers", "body", "status", "code"), [
    ({}, {"tenant": "acme"}, 401, "unauthorized"),
    ({"Authorization": "Bearer wrong-admin-key"}, {"tenant": "acme"}, 401, "unauthorized"),
    (ADMIN, {"tenant": "no spaces allowed"}, 422, "invalid_key_spec"),
    (ADMIN, {"tenant": "acme", "max_running": 0}, 422, "invalid_key_spec"),
    (ADMIN, {"tenant": "acme", "models": []}, 422, "invalid_key_spec"),
    (ADMIN, {"tenant": "acme", "surprise": 1}, 422, "invalid_key_spec"),
    (ADMIN, {"tenant": "acme", "max_running": "2"}, 422, "invalid_key_spec"),  # no coercion
])
async def test_admin_api_refusals_change_nothing(
    edge: EdgeClient, redis: Redis, headers: dict[str, str], body: dict[str, Any], status: int,
    code: str
) -> None:
    response = await edge.post("/v1/admin/keys", json=body, headers=headers)
    assert await error_of(response) == (status, code)
    assert await redis.scard(keys.API_KEYS) == 0
    listing = await edge.get("/v1/admin/keys", headers=headers)
    assert listing.status == (200 if headers == ADMIN else 401)


async def test_without_an_admin_key_the_admin_api_and_metrics_are_not_served(
    redis: Redis, redis_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(auth_settings(redis_url, admin_key=None)))
    for method, path in (("POST", "/v1/admin/keys"), ("GET", "/v1/admin/keys"),
                         ("DELETE", "/v1/admin/keys/abcdefghijklmnop"), ("GET", "/admin"),
                         ("GET", "/admin/console.js"), ("GET", "/v1/admin/streams"),
                         ("GET", "/v1/admin/usage"), ("GET", "/v1/admin/dead-letters"),
                         ("POST", "/v1/admin/dead-letters/1-0/replay")):
        response = await client.request(method, path, headers=ADMIN)
        assert await error_of(response) == (404, "not_found")
    assert (await client.get("/metrics", headers=ADMIN)).status == 401
    public = await aiohttp_client(create_app(auth_settings(redis_url, metrics_public=True)))
    assert (await public.get("/metrics")).status == 200
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_a_key_revoked_on_one_edge_is_refused_by_another_within_5_seconds(
    redis: Redis, edge_settings: Settings, aiohttp_client: ClientFactory
) -> None:
    edge1 = await aiohttp_client(create_app(edge_settings))
    edge2 = await aiohttp_client(create_app(edge_settings))
    created = await new_key(edge1)
    status_path = f"/v1/streams/{(await create(edge2, created['key']))['id']}"
    assert (await edge2.get(status_path, headers=bearer(created["key"]))).status == 200
    revoked_at = time.monotonic()
    assert (await edge1.delete(f"/v1/admin/keys/{created['key_id']}", headers=ADMIN)).status == 200
    for _ in range(60):  # edge 2 may trust its cached lookup a little longer
        response = await edge2.get(status_path, headers=bearer(created["key"]))
        if response.status == 401:
            break
        assert response.status == 200
        await asyncio.sleep(0.1)
    assert await error_of(response) == (401, "invalid_api_key")
    assert time.monotonic() - revoked_at < 5


async def test_demo_stand_in_creates_with_the_dev_key(
    redis: Redis, redis_url: str, aiohttp_client: ClientFactory, edge: EdgeClient
) -> None:
    assert (await edge.post("/demo/streams", json={"prompt": "x"})).status == 404  # not dev
    created = await new_key(edge, "dev")
    client = await aiohttp_client(create_app(auth_settings(redis_url,
                                                           demo_api_key=created["key"])))
    response = await client.post("/demo/streams", json={"prompt": "demo"})
    assert response.status == 202
    body = await response.json()
    assert body["events_url"].endswith(f"?token={body['token']}")
    status = await client.get(f"/v1/streams/{body['id']}", headers=bearer(body["token"]))
    assert status.status == 200
    assert await redis.hget(keys.meta(body["id"]), "key_id") == created["key_id"]


async def test_with_auth_disabled_no_credentials_are_needed(
    redis: Redis, redis_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(auth_settings(redis_url, auth_disabled=True)))
    response = await client.post("/v1/streams", json={"prompt": "x"})
    body = await response.json()
    assert response.status == 202 and body["token"] is None
    assert body["events_url"] == f"/v1/streams/{body['id']}/events"
    assert (await client.get(f"/v1/streams/{body['id']}")).status == 200
    cancelled = await client.post(f"/v1/streams/{body['id']}/cancel")
    assert (await cancelled.json())["status"] == "cancelled"
    assert [e.type for e in await read_events(client, body["id"])] == ["start", "done"]


# --- CORS and the WebSocket Origin --------------------------------------------------------------

APP = "https://app.example"


async def test_cors_allows_the_listed_origins_only(
    redis: Redis, redis_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(auth_settings(redis_url, cors_origins=APP)))
    key = (await new_key(client))["key"]
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type,idempotency-key"}
    allowed = await client.options("/v1/streams", headers={"Origin": APP, **preflight})
    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == APP
    assert {"AUTHORIZATION", "CONTENT-TYPE", "IDEMPOTENCY-KEY"} <= set(
        allowed.headers["Access-Control-Allow-Headers"].upper().split(","))
    refused = await client.options("/v1/streams", headers={"Origin": "https://evil.example",
                                                           **preflight})
    assert refused.status == 403 and "Access-Control-Allow-Origin" not in refused.headers
    stream_id = (await create(client, key, headers={"Origin": APP}))["id"]
    await client.post(f"/v1/streams/{stream_id}/cancel", headers=bearer(key))  # ends at once
    events = await client.get(f"/v1/streams/{stream_id}/events", headers={
        "Origin": APP, **bearer(key), "Last-Event-ID": "x"})
    assert events.status == 400  # a bad cursor, and still CORS headers a browser can read
    assert events.headers["Access-Control-Allow-Origin"] == APP
    events = await client.get(f"/v1/streams/{stream_id}/events",
                              headers={"Origin": APP, **bearer(key)})
    assert events.status == 200 and events.headers["Access-Control-Allow-Origin"] == APP
    assert "Origin" in events.headers.getall("Vary")
    assert "X-STREAM-ID" in events.headers["Access-Control-Expose-Headers"].upper()
    assert b"event: done" in await events.read()
    preflight_get = await client.options(f"/v1/streams/{stream_id}/events", headers={
        "Origin": APP, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "last-event-id,authorization"})
    assert preflight_get.status == 200


async def test_without_origins_there_is_no_cors(edge: EdgeClient) -> None:
    preflight = await edge.options("/v1/streams", headers={
        "Origin": APP, "Access-Control-Request-Method": "POST"})
    assert preflight.status == 405 and "Access-Control-Allow-Origin" not in preflight.headers


async def test_the_websocket_checks_the_origin(
    redis: Redis, redis_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(auth_settings(redis_url, cors_origins=APP)))
    key = (await new_key(client))["key"]
    created = await create(client, key)
    own_origin = f"http://{client.server.host}:{client.server.port}"
    for origin in (APP, own_origin, None):  # a client without Origin is not a browser
        headers = {"Origin": origin} if origin else {}
        async with client.ws_connect(created["ws_url"], headers=headers) as ws:
            assert not ws.closed  # the handshake passed
    for origin in ("https://evil.example", "null", "http://app.example"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(created["ws_url"], headers={"Origin": origin})
        assert refused.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as anonymous:
        await client.ws_connect(f"/v1/streams/{created['id']}/ws")  # no Origin, no credential
    assert anonymous.value.status == 401


# --- a backend mints its own tokens ----------------------------------------------------------


def readme_snippet(marker: str) -> str:
    """The Python code block of README.md that contains ``marker``."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    [block] = [str(b) for b in blocks if marker in b]
    return block


async def test_the_readme_snippet_mints_tokens_the_edge_accepts(
    edge: EdgeClient, worker: None
) -> None:
    namespace: dict[str, Any] = {}
    exec(readme_snippet("def stream_token"), namespace)
    stream_token = namespace["stream_token"]
    key = (await new_key(edge))["key"]
    stream_id = (await create(edge, key, {"prompt": "minted elsewhere"}))["id"]
    reader = stream_token(stream_id, "acme", TOKEN_SECRET)
    events = await follow(edge, f"/v1/streams/{stream_id}/events?token={reader}")
    assert assemble(events).text == expected_text("minted elsewhere")
    refused = await edge.post(f"/v1/streams/{stream_id}/cancel", headers=bearer(reader))
    assert await error_of(refused) == (403, "insufficient_scope")
    canceller = stream_token(stream_id, "acme", TOKEN_SECRET, cancel=True)
    cancelled = await edge.post(f"/v1/streams/{stream_id}/cancel", headers=bearer(canceller))
    assert cancelled.status == 202
    wrong_tenant = stream_token(stream_id, "globex", TOKEN_SECRET)
    response = await edge.get(f"/v1/streams/{stream_id}", headers=bearer(wrong_tenant))
    assert await error_of(response) == (404, "not_found")


async def test_an_edge_with_only_a_public_key_verifies_but_cannot_mint(
    redis: Redis, redis_url: str, aiohttp_client: ClientFactory, edge: EdgeClient
) -> None:
    private = Ed25519PrivateKey.generate()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    verifier = await aiohttp_client(create_app(auth_settings(
        redis_url, token_secret=None, token_public_key=public_pem)))
    key = (await new_key(edge))["key"]
    created = await create(verifier, key)
    assert created["token"] is None
    assert created["events_url"] == f"/v1/streams/{created['id']}/events"
    now = int(time.time())
    claims = {"sub": f"stream:{created['id']}", "tenant": "acme", "scope": "read",
              "aud": "tokenwire", "iat": now, "exp": now + 600}
    signed = jwt.encode(claims, private, algorithm="EdDSA")
    assert (await verifier.get(f"/v1/streams/{created['id']}", headers=bearer(signed))
            ).status == 200
    hs256 = jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")  # it holds no secret
    response = await verifier.get(f"/v1/streams/{created['id']}", headers=bearer(hs256))
    assert await error_of(response) == (401, "invalid_token")


async def test_the_console_api_needs_the_admin_key_and_refuses_bad_input(
    redis: Redis, redis_url: str, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(auth_settings(redis_url)))
    for method, path in (("GET", "/v1/admin/streams"), ("GET", "/v1/admin/journal"),
                         ("GET", "/v1/admin/usage"), ("GET", "/v1/admin/dead-letters"),
                         ("POST", "/v1/admin/dead-letters/1-0/replay"),
                         ("POST", f"/v1/admin/streams/{'a' * 22}/cancel")):
        for headers in ({}, {"Authorization": "Bearer not-the-admin-key"}):
            response = await client.request(method, path, headers=headers)
            assert await error_of(response) == (401, "unauthorized")
    # Digits Python's int() refuses (a superscript; more digits than it converts)
    # are a bad limit, not a 500.
    for limit in ("0", "501", "-1", "1.0", "", "%C2%B2", "9" * 5000):
        for path in ("/v1/admin/streams", "/v1/admin/journal", "/v1/admin/dead-letters"):
            assert await error_of(await client.get(f"{path}?limit={limit}", headers=ADMIN)) == (
                400, "bad_limit"), (path, limit)
    assert await error_of(await client.post("/v1/admin/dead-letters/nope/replay",
                                            headers=ADMIN)) == (404, "not_found")
    # Not Redis stream ids (other digits; beyond 64 bits), in a partition or
    # not, or a partition beyond the last, are unknown too, not a 500.
    for entry_id in ("1-0", "%D9%A3-%D9%A3", "99999999999999999999-0", "1-99999999999999999999",
                     "0:1-0", "3:99999999999999999999-0", "%D9%A3:1-0", "16:1-0", "-1:1-0",
                     "1:2:1-0"):
        assert await error_of(await client.post(f"/v1/admin/dead-letters/{entry_id}/replay",
                                                headers=ADMIN)) == (404, "not_found"), entry_id
    page = await client.get("/admin")  # the page is code only: its data needs the key
    assert page.status == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert not [p for p in partitions_of(DEFAULT_PARTITIONS) if await redis.hlen(p.replays)]
