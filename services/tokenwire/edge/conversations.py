"""Conversations over REST: create, read, post a message (a turn), cancel.

- ``POST /v1/conversations`` (API key) ``{"id"?, "system"?, "token_ttl_seconds"?,
  "token_scopes"?}`` → 201 (200 when the id exists: unchanged) with a
  conversation token for a browser and its URLs.
- ``GET /v1/conversations/{id}`` → the history and the active turn.
- ``POST /v1/conversations/{id}/messages`` ``{"content", ...job options}`` →
  202, answered like ``POST /v1/streams`` (``Accept: text/event-stream``: the
  turn's events themselves); 409 ``conversation_busy`` while a turn runs.
- ``POST /v1/conversations/{id}/cancel`` → 202 ``{"stream_id", "status"}``.

Every route takes an API key of the conversation's tenant, or a conversation
token with the scope it needs (``read``, ``write``, ``cancel``).
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tokenwire import keys
from tokenwire.edge import keys as appkeys
from tokenwire.edge.auth import Principal
from tokenwire.edge.bodies import read_json_object
from tokenwire.edge.delivering import delivering
from tokenwire.edge.delivery import send_sse
from tokenwire.edge.handlers import check_limits, demo_principal, follower_for, invalid
from tokenwire.edge.submit import grant
from tokenwire.edge.turns import (
    TurnOptions,
    cancel_turn,
    current,
    describe,
    start_turn,
    turn_grant,
)
from tokenwire.errors import ConversationNotFound, InvalidValue
from tokenwire.jobs import JobOptions, json_integer

ConversationScope = Literal["read", "write", "cancel"]
ALL_SCOPES: list[ConversationScope] = ["read", "write", "cancel"]


def _all_scopes() -> list[ConversationScope]:
    return list(ALL_SCOPES)


class ConversationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    system: str = Field("", max_length=100_000)
    token_ttl_seconds: int | None = Field(None, ge=60)
    token_scopes: list[ConversationScope] = Field(default_factory=_all_scopes, min_length=1,
                                                  max_length=3)

    _json_integers = field_validator("token_ttl_seconds", mode="before")(json_integer)


class MessageRequest(JobOptions):
    content: str = Field(min_length=1)


def conversation_id_of(request: web.Request) -> str:
    conversation_id = request.match_info["conversation_id"]
    if not keys.is_conversation_id(conversation_id):
        raise ConversationNotFound()  # no conversation could ever have this id
    return conversation_id


def conversation_urls(conversation_id: str, token: str | None) -> dict[str, str]:
    base = f"/v1/conversations/{conversation_id}"
    query = f"?token={token}" if token else ""
    return {"url": base, "ws_url": f"{base}/ws{query}"}


def options_of(message: JobOptions) -> TurnOptions:
    return TurnOptions(model=message.model, max_tokens=message.max_tokens,
                       temperature=message.temperature, buffer=message.buffer,
                       metadata=message.metadata, idle_cancel_ms=message.idle_cancel_ms())


async def _validated(request: web.Request, model: type[BaseModel], code: str) -> Any:
    settings = request.app[appkeys.SETTINGS]
    body = await read_json_object(request, settings)
    try:
        return model.model_validate(body, strict=True)  # as handlers.read_job
    except ValidationError as exc:
        raise invalid(code, "the request has invalid values", exc) from exc


# --- handlers ------------------------------------------------------------------------


async def create_conversation(request: web.Request) -> web.Response:
    app = request.app
    principal = await app[appkeys.AUTH].api_key(request, "creating a conversation")
    return await create_conversation_as(request, principal)


async def create_demo_conversation(request: web.Request) -> web.Response:
    """``POST /demo/conversations`` (``tokenwire dev`` only): the demo's backend
    stand-in — creates a conversation with the dev API key held here and hands
    the browser a conversation token, never the key."""
    return await create_conversation_as(request, await demo_principal(request))


async def create_conversation_as(request: web.Request, principal: Principal) -> web.Response:
    app = request.app
    settings = app[appkeys.SETTINGS]
    spec: ConversationRequest = await _validated(request, ConversationRequest,
                                                 "invalid_conversation")
    if spec.token_ttl_seconds is not None and spec.token_ttl_seconds > (
            settings.token_max_ttl_seconds):
        raise InvalidValue("invalid_conversation",
                           f"token_ttl_seconds must be <= {settings.token_max_ttl_seconds}")
    conversation_id = spec.id or keys.new_conversation_id()
    if principal.key is not None:  # a week of Redis memory: counted like a new stream
        await app[appkeys.LIMITER].admit_request(principal.key.key_id,
                                                 f"conversation:{secrets.token_hex(8)}")
    created = await app[appkeys.CONVERSATIONS].create(
        principal.tenant, conversation_id,
        principal.key.key_id if principal.key is not None else None, spec.system)
    granted = grant(app, "conversation", conversation_id, principal.tenant, spec.token_scopes,
                    ttl_seconds=spec.token_ttl_seconds)
    body = {"id": conversation_id, "created": created, **granted,
            **conversation_urls(conversation_id, granted["token"])}
    return web.json_response(body, status=201 if created else 200,
                             headers={"Location": f"/v1/conversations/{conversation_id}"})


async def get_conversation(request: web.Request) -> web.Response:
    app = request.app
    principal = await app[appkeys.AUTH].principal(request)
    conversation_id = conversation_id_of(request)
    tenant = principal.tenant_for_conversation(conversation_id, "read")
    conversation = await current(app, tenant, conversation_id)
    return web.json_response(describe(app, principal, conversation))


async def post_message(request: web.Request) -> web.StreamResponse:
    app = request.app
    principal = await app[appkeys.AUTH].principal(request)
    conversation_id = conversation_id_of(request)
    principal.tenant_for_conversation(conversation_id, "write")  # 404/403 before the body
    message: MessageRequest = await _validated(request, MessageRequest, "invalid_message")
    check_limits(message, app[appkeys.SETTINGS], "invalid_message")
    if len(message.content) > app[appkeys.SETTINGS].conversation_max_chars:
        raise InvalidValue("invalid_message", "the message is longer than a conversation keeps")
    turn = await start_turn(app, principal, conversation_id, message.content,
                            options_of(message))
    tenant = principal.tenant
    if "text/event-stream" in request.headers.get("Accept", ""):
        follower = await follower_for(request, turn.stream_id, None, tenant=tenant)
        async with delivering(app, turn.stream_id, follower.key_id, "sse"):
            return await send_sse(request, follower, headers={"X-Stream-ID": turn.stream_id})
    body: dict[str, Any] = {
        "id": turn.stream_id, "status": "queued", "conversation_id": conversation_id,
        "message_id": turn.message_id,
        "user_message": turn.user_message.public() if turn.user_message else None,
        **turn_grant(app, principal, turn.stream_id, tenant, message.token_ttl_seconds),
    }
    return web.json_response(body, status=202,
                             headers={"Location": f"/v1/streams/{turn.stream_id}"})


async def cancel_conversation(request: web.Request) -> web.Response:
    app = request.app
    principal = await app[appkeys.AUTH].principal(request)
    conversation_id = conversation_id_of(request)
    outcome = await cancel_turn(app, principal, conversation_id)
    return web.json_response({"conversation_id": conversation_id, **outcome}, status=202)
