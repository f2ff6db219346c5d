"""A conversation's turns, as every conversation route starts, shows and cancels them
(REST, the conversation WebSocket, the AI SDK's chat route).

A turn is a stream whose job carries the conversation's history. Its answer is
appended to the history when the stream ends, exactly once, by whoever gets
there first (``ConversationStore.settle``): the worker after the terminal
write, or an edge that finds the conversation busy with a turn that has ended
— so a client that posts right after ``done`` never meets a stale 409.

Turns are counted against the API key that created the conversation (a
browser posting with a conversation token spends its backend's key), or the
calling key when a backend posts itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tokenwire.apikeys import ApiKey
from tokenwire.conversations import (
    Conversation,
    ConversationMessage,
    TurnInProgress,
    new_message_id,
)
from tokenwire.edge import keys as appkeys
from tokenwire.edge.auth import Principal
from tokenwire.edge.submit import cancel, check_model, check_open, new_job, stream_grant, submit
from tokenwire.errors import ConversationNotFound, Unauthorized
from tokenwire.jobs import MetadataValue
from tokenwire.settings import BufferMode
from tokenwire.store import now_ms


@dataclass(frozen=True, slots=True)
class TurnOptions:
    """The job options a message may carry (as ``POST /v1/streams`` takes them)."""

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    buffer: BufferMode | None = None
    metadata: dict[str, MetadataValue] = field(default_factory=dict)
    idle_cancel_ms: int | None = None


@dataclass(frozen=True, slots=True)
class StartedTurn:
    conversation_id: str
    stream_id: str
    message_id: str  # of the answer it will append
    user_message: ConversationMessage | None


async def start_turn(
    app: web.Application, principal: Principal, conversation_id: str, content: str | None,
    options: TurnOptions, *, user_message_id: str | None = None, create: bool = False,
    truncate_from: str = "", regenerate: bool = False,
) -> StartedTurn:
    """Append the user's message (``content``; None: answer the history as it
    is) and start the stream that answers it. ``create``: a conversation the
    caller's API key may create on first use (the AI SDK's chat id)."""
    check_open(app)
    tenant = principal.tenant_for_conversation(conversation_id, "write")
    conversations = app[appkeys.CONVERSATIONS]
    conversation = await conversations.get(tenant, conversation_id)
    if conversation is None and not (create and principal.token is None):
        raise ConversationNotFound()
    key = await _paying_key(app, principal, conversation)
    model = options.model or app[appkeys.SETTINGS].default_model_name
    check_model(app, key, model)  # before anything is written
    message_id = new_message_id()
    user_message = None
    if content is not None:
        user_message = ConversationMessage(user_message_id or new_message_id(), "user",
                                           content, now_ms())
    # The job, without its history yet: counted against the key's limits first,
    # so that a 429 leaves the conversation as it was.
    job = new_job(app, [], key=key, tenant=tenant, model=model, max_tokens=options.max_tokens,
                  temperature=options.temperature, buffer=options.buffer,
                  metadata=options.metadata, idle_cancel_ms=options.idle_cancel_ms,
                  conversation=conversation_id)
    limiter = app[appkeys.LIMITER]
    await limiter.admit(job)
    try:
        history = await _begin(app, tenant, conversation_id, stream_id=job.stream_id,
                               message_id=message_id, user_message=user_message,
                               create=create, key_id=job.key_id, truncate_from=truncate_from,
                               regenerate=regenerate)
    except BaseException:
        await limiter.undo(job)
        raise
    system = conversation.system if conversation is not None else ""
    job.messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": m.role, "content": m.content} for m in history]
    try:
        await submit(app, job, key, admitted=True)
    except BaseException:
        await limiter.undo(job)
        await conversations.end_turn(tenant, conversation_id, job.stream_id, "abandoned")
        raise
    return StartedTurn(conversation_id, job.stream_id, message_id, user_message)


async def _begin(app: web.Application, tenant: str | None, conversation_id: str,
                 **turn: Any) -> list[ConversationMessage]:
    """``begin_turn``, settling a busy conversation's ended turn once first."""
    conversations = app[appkeys.CONVERSATIONS]
    try:
        return await conversations.begin_turn(tenant, conversation_id, **turn)
    except TurnInProgress as busy:
        if not await conversations.settle(tenant, conversation_id, busy.stream_id,
                                          app[appkeys.STORE], turn_since_ms=busy.since_ms):
            raise
    return await conversations.begin_turn(tenant, conversation_id, **turn)


async def _paying_key(app: web.Application, principal: Principal,
                      conversation: Conversation | None) -> ApiKey | None:
    """The key whose limits a turn counts against (see the module docstring).
    A conversation token whose key was revoked spends nothing: revoking a key
    is the operator's kill switch, for the tokens it handed out too."""
    if principal.key is not None or conversation is None or conversation.key_id is None:
        return principal.key
    key = await app[appkeys.AUTH].key_record(conversation.key_id)
    if key is None:
        raise Unauthorized("invalid_api_key",
                           "the API key behind this conversation is no longer valid")
    return key


async def current(app: web.Application, tenant: str | None, conversation_id: str
                  ) -> Conversation:
    """The conversation, its active turn settled first if its stream has ended."""
    conversations = app[appkeys.CONVERSATIONS]
    conversation = await conversations.get(tenant, conversation_id)
    if conversation is None:
        raise ConversationNotFound()
    active = conversation.active
    if active is not None and await conversations.settle(
            tenant, conversation_id, active.stream_id, app[appkeys.STORE],
            turn_since_ms=active.since_ms):
        conversation = await conversations.get(tenant, conversation_id)
        if conversation is None:
            raise ConversationNotFound()
    return conversation


async def cancel_turn(app: web.Application, principal: Principal, conversation_id: str
                      ) -> dict[str, Any]:
    """Cancel the active turn, if any: ``{"stream_id", "status"}`` (``status``
    None when nothing was running)."""
    tenant = principal.tenant_for_conversation(conversation_id, "cancel")
    conversation = await current(app, tenant, conversation_id)
    if conversation.active is None:
        return {"stream_id": None, "status": None}
    stream_id = conversation.active.stream_id
    outcome = await cancel(app, stream_id, tenant)
    if outcome.status == "cancelled":  # it was queued: ended here, no worker will settle it
        await app[appkeys.CONVERSATIONS].settle(tenant, conversation_id, stream_id,
                                                app[appkeys.STORE])
    return {"stream_id": stream_id, "status": outcome.status}


def turn_scopes(principal: Principal) -> list[str]:
    """What a turn's stream token allows: reading, and cancelling when the caller may."""
    return ["read", "cancel"] if principal.may_in_conversation("cancel") else ["read"]


def turn_grant(app: web.Application, principal: Principal, stream_id: str,
               tenant: str | None, ttl_seconds: int | None = None) -> dict[str, Any]:
    """A turn's stream token and URLs, for this caller: its scopes, and no
    longer-lived than the caller's own token (a short conversation token must
    not buy day-long stream tokens)."""
    if principal.token is not None:
        left = principal.token.expires_at - int(time.time())
        ttl_seconds = max(1, min(ttl_seconds or app[appkeys.SETTINGS].token_ttl_seconds, left))
    return stream_grant(app, stream_id, tenant, turn_scopes(principal), ttl_seconds)


def describe(app: web.Application, principal: Principal, conversation: Conversation
             ) -> dict[str, Any]:
    """A conversation as the API shows it: its history and its active turn,
    with a stream token to follow that turn."""
    active = None
    if conversation.active is not None:
        stream_id = conversation.active.stream_id
        active = {"stream_id": stream_id, "message_id": conversation.active.message_id,
                  "since_ms": conversation.active.since_ms,
                  **turn_grant(app, principal, stream_id, conversation.tenant)}
    return {
        "id": conversation.id,
        "created_at_ms": conversation.created_at_ms,
        "updated_at_ms": conversation.updated_at_ms,
        # The backend's instructions are its own: a browser's token does not read them.
        "system": (conversation.system or None) if principal.token is None else None,
        "messages": [message.public() for message in conversation.messages],
        "active": active,
        "last_stream_id": conversation.last_stream,
    }
