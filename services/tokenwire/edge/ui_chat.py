"""The AI SDK's UI message stream: ``useChat`` with ``DefaultChatTransport`` (``ai`` 6 and 7).

- ``POST /v1/ui/chat`` takes the transport's body (``{id, messages, trigger,
  messageId}``): ``id`` names the conversation (created on first use when the
  caller holds an API key); the server keeps the history and takes from the
  body only the new user message (``submit-message``: its text parts; with
  ``messageId``, an edit: the history is cut at that message first) or nothing
  (``regenerate-message``: the last answer is dropped and made again). It
  answers with the turn as a UI message stream.
- ``GET /v1/ui/chat/{chatId}/stream`` (the transport's default reconnect URL,
  ``useChat({resume: true})`` / ``resumeStream()``): 204 when the chat has no
  active turn, else the active message from its start — ``start`` with the
  same ``messageId``, the text so far as one ``text-delta``, then live — so the
  client replaces its partial message instead of duplicating it.

The stream (``x-vercel-ai-ui-message-stream: v1``, one ``data:`` JSON chunk
per event): ``start``, ``text-start``, ``text-delta``…, ``text-end``, then
``finish`` (``finishReason``), or ``abort`` (the turn was cancelled through
the API), or ``error``; then ``data: [DONE]``. An aborted fetch (``stop()``)
is a disconnect, not a cancel: the answer goes on and lands in the history.
A restart of the generation after text was sent cannot be said in this
protocol: it ends with ``error`` (``resumeStream()`` then gets it whole).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tokenwire import keys
from tokenwire.edge import keys as appkeys
from tokenwire.edge.bodies import read_json_object
from tokenwire.edge.delivering import delivering
from tokenwire.edge.follower import StreamComplete
from tokenwire.edge.handlers import invalid
from tokenwire.edge.openai_shape import send_data, sse_stream
from tokenwire.edge.source import open_events
from tokenwire.edge.turns import TurnOptions, current, start_turn
from tokenwire.errors import ConversationNotFound, InvalidValue
from tokenwire.events import Event
from tokenwire.jobs import json_integer
from tokenwire.settings import BufferMode

HEADERS = {"x-vercel-ai-ui-message-stream": "v1", "Cache-Control": "no-cache",
           "X-Accel-Buffering": "no"}
_FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content-filter"}
_ID = r"^[A-Za-z0-9_-]{1,64}$"


class UIPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class UIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # metadata, ... are the client's

    id: str = Field(max_length=200)
    role: Literal["system", "user", "assistant"]
    parts: list[UIPart] = Field(max_length=1000)


class UIChatRequest(BaseModel):
    """The AI SDK transport's body; fields an app adds with ``body:`` are
    ignored, except the job options below."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(pattern=_ID)
    messages: list[UIMessage] = Field(max_length=10_000)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = Field(None, pattern=_ID)
    model: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    buffer: BufferMode | None = None

    _json_integers = field_validator("max_tokens", mode="before")(json_integer)


async def ui_chat(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[appkeys.SETTINGS]
    principal = await app[appkeys.AUTH].principal(request)
    body = await read_json_object(request, settings)
    try:
        chat = UIChatRequest.model_validate(body, strict=True)  # as handlers.read_job
    except ValidationError as exc:
        raise invalid("invalid_chat", "the chat request has invalid values", exc) from exc
    if chat.max_tokens is not None and chat.max_tokens > settings.max_tokens_limit:
        raise InvalidValue("invalid_chat", f"max_tokens must be <= {settings.max_tokens_limit}")
    options = TurnOptions(model=chat.model, max_tokens=chat.max_tokens,
                          temperature=chat.temperature, buffer=chat.buffer)
    if chat.trigger == "regenerate-message":
        turn = await start_turn(app, principal, chat.id, None, options, create=False,
                                regenerate=True)
    else:
        message = _new_user_message(chat)
        if len(message[1]) > settings.conversation_max_chars:
            raise InvalidValue("invalid_chat", "the message is longer than a conversation keeps")
        turn = await start_turn(app, principal, chat.id, message[1], options,
                                user_message_id=message[0], create=True,
                                truncate_from=chat.messageId or "")
    events = await open_events(app, turn.stream_id, None, tenant=principal.tenant)
    async with delivering(app, turn.stream_id, events.key_id, "ui_chat"), sse_stream(
            request, {**HEADERS, "X-Stream-ID": turn.stream_id}) as response:
        async for chunk in ui_chunks(events.events(), turn.stream_id, turn.message_id):
            await send_data(response, chunk)
    return response


def _new_user_message(chat: UIChatRequest) -> tuple[str | None, str]:
    """The id (when usable as ours) and text of the message the user just sent."""
    if not chat.messages or chat.messages[-1].role != "user":
        raise InvalidValue("invalid_chat", "the last message must be the user's new message")
    message = chat.messages[-1]
    texts = []
    for part in message.parts:
        if part.type == "text" and part.text is not None:
            texts.append(part.text)
        elif part.type != "step-start":
            raise InvalidValue("unsupported_part", f"{part.type!r} parts are not supported: "
                               "send text")
    if not "".join(texts):
        raise InvalidValue("invalid_chat", "the message has no text")
    usable = keys.is_conversation_id(message.id)
    return (message.id if usable else None), "".join(texts)


async def resume_ui_chat(request: web.Request) -> web.StreamResponse:
    app = request.app
    principal = await app[appkeys.AUTH].principal(request)
    chat_id = request.match_info["chat_id"]
    if not keys.is_conversation_id(chat_id):
        raise ConversationNotFound()
    tenant = principal.tenant_for_conversation(chat_id, "read")
    try:
        conversation = await current(app, tenant, chat_id)
    except ConversationNotFound:
        return web.Response(status=204)  # a chat that never began has nothing to resume
    active = conversation.active
    if active is None:
        return web.Response(status=204)
    try:
        events = await open_events(app, active.stream_id, None, tenant=tenant, snapshot=True)
    except StreamComplete:
        return web.Response(status=204)
    async with delivering(app, active.stream_id, events.key_id, "ui_chat"), sse_stream(
            request, {**HEADERS, "X-Stream-ID": active.stream_id}) as response:
        async for chunk in ui_chunks(events.events(), active.stream_id, active.message_id):
            await send_data(response, chunk)
    return response


async def ui_chunks(events: AsyncIterator[Event], stream_id: str, message_id: str
                    ) -> AsyncIterator[dict[str, Any] | str]:
    """A turn's events as UI message chunks, from the message's start."""
    text_id = f"text_{stream_id}"
    yield {"type": "start", "messageId": message_id,
           "messageMetadata": {"streamId": stream_id}}
    yield {"type": "text-start", "id": text_id}
    sent_text = False
    async for event in events:
        data = event.payload()
        if event.type in ("token", "snapshot"):
            if event.type == "snapshot" and sent_text:
                yield _restarted()
                break
            if data["content"]:
                sent_text = True
                yield {"type": "text-delta", "id": text_id, "delta": data["content"]}
        elif event.type == "reset" and sent_text:
            yield _restarted()
            break
        elif event.type == "error":
            yield {"type": "error", "errorText": str(data["message"])}
            break
        elif event.type == "done":
            yield {"type": "text-end", "id": text_id}
            reason = str(data.get("finish_reason"))
            if reason == "cancelled":
                yield {"type": "abort", "reason": "cancelled"}
            else:
                yield {"type": "finish", "finishReason": _FINISH_REASONS.get(reason, "other")}
    yield "[DONE]"


def _restarted() -> dict[str, Any]:
    return {"type": "error", "errorText": "the answer restarted after a failure; resume the "
                                          "stream to get it whole"}
