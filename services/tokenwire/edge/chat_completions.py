"""``POST /v1/chat/completions``: the OpenAI Chat Completions protocol over a stream.

A request becomes a Tokenwire stream (its id in ``X-Stream-ID``, so a backend
can hand the same answer to a browser, which may resume or cancel it). The
answer is either the stream's events as ``chat.completion.chunk`` objects
(``stream: true``: the first delta carries the role, the last the
``finish_reason``, then the usage chunk when ``stream_options.include_usage``,
then ``data: [DONE]``), or one ``chat.completion`` once the stream ended.

What this protocol cannot express is said as an OpenAI error object:
mid-stream as a ``data:`` line (``stream_reset`` when the generation restarted
after text was sent — the chunks cannot take text back; the generation's own
``error``; ``cancelled``), and as a status before the stream (a cancel of a
non-streaming request is 409 ``cancelled``; a failed generation 502).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from tokenwire.edge import keys as appkeys
from tokenwire.edge.delivering import delivering
from tokenwire.edge.openai_shape import (
    TEXT_CONTENT_SCHEMA,
    accepted_beyond_fields,
    check_max_tokens,
    error_object,
    error_response,
    openai_errors,
    read_request,
    refuse_unknown,
    send_data,
    sse_stream,
    submit_request,
    text_of,
)
from tokenwire.edge.source import open_events
from tokenwire.edge.submit import new_job
from tokenwire.errors import InvalidValue, MalformedRequest
from tokenwire.events import Event
from tokenwire.jobs import json_integer

SUPPORTED = ("model", "messages", "stream", "stream_options", "max_tokens",
             "max_completion_tokens", "temperature", "user", "metadata")
#: Parameters Tokenwire does not implement, accepted only with a value that changes nothing.
NEUTRAL = {"n": 1, "logprobs": False, "store": False, "response_format": {"type": "text"}}
ROLES = ("system", "developer", "user", "assistant")
#: A message as ``_messages`` reads it, in JSON Schema (the OpenAPI document).
_MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["role", "content"],
    "properties": {"role": {"enum": list(ROLES)}, "content": TEXT_CONTENT_SCHEMA,
                   "name": {"description": "Accepted and ignored."}},
    "additionalProperties": {"type": "null", "description": "Anything else: refused unless null."},
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class ChatRequest(BaseModel):
    # The rest was checked by refuse_unknown; the messages are read by _messages.
    model_config = ConfigDict(extra="ignore", json_schema_extra=accepted_beyond_fields(NEUTRAL))

    model: str = Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
    messages: list[Annotated[dict[str, Any], WithJsonSchema(_MESSAGE_SCHEMA)]] = Field(
        min_length=1, max_length=1000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = Field(None, max_length=16)

    _json_integers = field_validator("max_tokens", "max_completion_tokens", mode="before")(
        json_integer)


@openai_errors
async def chat_completions(request: web.Request) -> web.StreamResponse:
    app = request.app
    principal = await app[appkeys.AUTH].api_key(request, "a chat completion")
    body, chat = await read_request(request, ChatRequest, SUPPORTED, NEUTRAL)
    max_tokens = chat.max_completion_tokens or chat.max_tokens
    check_max_tokens(app, max_tokens, "max_completion_tokens")
    metadata: dict[str, Any] = dict(chat.metadata or {})
    if chat.user is not None:
        metadata["user"] = chat.user
    job = new_job(app, _messages(chat.messages), key=principal.key, tenant=principal.tenant,
                  model=chat.model, max_tokens=max_tokens, temperature=chat.temperature,
                  metadata=metadata)
    stream_id = await submit_request(request, job, principal.key, body)
    events = await open_events(app, stream_id, None, tenant=principal.tenant)
    completion = _Completion(stream_id, chat.model)
    headers = {"X-Stream-ID": stream_id}
    async with delivering(app, stream_id, events.key_id, "chat_completions"):
        if chat.stream:
            include_usage = chat.stream_options is not None and chat.stream_options.include_usage
            return await _stream(request, events.events(), completion, include_usage, headers)
        return await _whole(events.events(), completion, headers)


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    chat = []
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict):
            raise MalformedRequest("invalid_request", f"{where} must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidValue("unsupported_parameter",
                               f"{where}.role: only {', '.join(ROLES)} messages are supported")
        refuse_unknown({k: v for k, v in message.items() if k not in ("role", "name")},
                       ["content"])
        chat.append({"role": str(role), "content": text_of(message.get("content"),
                                                            f"{where}.content")})
    return chat


class _Completion:
    """One completion's ids and the text assembled from its events."""

    def __init__(self, stream_id: str, model: str) -> None:
        self.id = f"chatcmpl-{stream_id}"
        self.model = model
        self.created = int(time.time())
        self.text = ""

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None,
              usage: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}],
        }
        if usage:
            body["usage"] = None
        return body

    def usage_chunk(self, done: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": None, "choices": [],
                "usage": usage_of(done)}


def usage_of(done: dict[str, Any]) -> dict[str, int]:
    usage = done.get("usage") or {}
    completion = int(usage.get("completion_tokens", done.get("tokens", 0)))
    prompt = int(usage.get("prompt_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": int(usage.get("total_tokens", prompt + completion))}


def _cancelled(done: dict[str, Any]) -> bool:
    return done.get("finish_reason") == "cancelled"


async def _stream(request: web.Request, events: AsyncIterator[Event], completion: _Completion,
                  include_usage: bool, headers: dict[str, str]) -> web.StreamResponse:
    async with sse_stream(request, headers) as response:
        await send_data(response, completion.chunk({"role": "assistant", "content": ""},
                                                   usage=include_usage))
        sent_text = False
        async for event in events:
            data = event.payload()
            if event.type in ("token", "snapshot") and data["content"]:
                if event.type == "snapshot" and sent_text:
                    await send_data(response, _reset_error())
                    return response
                sent_text = True
                await send_data(response, completion.chunk({"content": data["content"]},
                                                           usage=include_usage))
            elif event.type == "reset" and sent_text:
                await send_data(response, _reset_error())  # chunks cannot take text back
                return response
            elif event.type == "error":
                await send_data(response, error_object(502, data["code"], data["message"]))
                return response
            elif event.type == "done":
                if _cancelled(data):
                    await send_data(response, error_object(
                        409, "cancelled", "the generation was cancelled"))
                    return response
                await send_data(response, completion.chunk(
                    {}, finish_reason=str(data["finish_reason"]), usage=include_usage))
                if include_usage:
                    await send_data(response, completion.usage_chunk(data))
                await send_data(response, "[DONE]")
    return response


def _reset_error() -> dict[str, Any]:
    return error_object(502, "stream_reset", "the generation restarted after a failure; the "
                        "text sent so far is void: retry, or follow the stream from X-Stream-ID")


async def _whole(events: AsyncIterator[Event], completion: _Completion,
                 headers: dict[str, str]) -> web.Response:
    async for event in events:
        data = event.payload()
        if event.type == "token":
            completion.text += data["content"]
        elif event.type in ("reset", "snapshot"):
            completion.text = data.get("content", "")  # nothing was sent yet: start over
        elif event.type == "error":
            return error_response(502, data["code"], data["message"])
        elif event.type == "done":
            if _cancelled(data):
                response = error_response(409, "cancelled", "the generation was cancelled")
                response.headers.update(headers)
                return response
            return web.json_response({
                "id": completion.id, "object": "chat.completion", "created": completion.created,
                "model": completion.model, "system_fingerprint": None,
                "choices": [{"index": 0, "logprobs": None,
                             "finish_reason": data["finish_reason"],
                             "message": {"role": "assistant", "content": completion.text,
                                         "refusal": None}}],
                "usage": usage_of(data)}, headers=headers)
    return error_response(503, "stream_interrupted", "the stream ended early; retry")
