"""The OpenAI Responses API, text output, background mode — the OpenAI protocol with resume.

- ``POST /v1/responses`` ``{model, input, instructions?, background?, stream?,
  max_output_tokens?, temperature?, metadata?}``: a stream. ``background:
  true`` answers at once (``status: queued``); ``stream: true`` answers with
  its events; neither waits for the whole response.
- ``GET /v1/responses/{id}``: the response object now;
  ``?stream=true&starting_after=N``: its events after sequence number N
  (``response_events``), on any edge.
- ``POST /v1/responses/{id}/cancel``: cancel; the response object.

Ids are ``resp_<stream id>`` (and ``msg_<stream id>`` for the output item),
so a response is also a Tokenwire stream: ``X-Stream-ID`` names it for
browsers. Anything beyond text output (tools, ``previous_response_id``,
reasoning, ...) is refused with 400 ``unsupported_parameter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from tokenwire import keys
from tokenwire.edge import keys as appkeys
from tokenwire.edge.delivering import delivering
from tokenwire.edge.follower import StreamComplete
from tokenwire.edge.openai_shape import (
    TEXT_CONTENT_SCHEMA,
    accepted_beyond_fields,
    check_max_tokens,
    openai_errors,
    read_request,
    send_data,
    sse_stream,
    submit_request,
    text_of,
)
from tokenwire.edge.response_events import (
    ResponseEvents,
    position_after,
    status_of_done,
    usage_of,
)
from tokenwire.edge.source import open_events
from tokenwire.edge.submit import cancel, new_job
from tokenwire.errors import InvalidValue, MalformedRequest, StreamNotFound
from tokenwire.jobs import json_integer
from tokenwire.store import Snapshot

SUPPORTED = ("model", "input", "instructions", "background", "stream", "max_output_tokens",
             "temperature", "metadata", "user")
#: Parameters Tokenwire does not implement, accepted only with a value that changes nothing.
NEUTRAL = {"store": True, "text": {"format": {"type": "text"}}, "truncation": "disabled",
           "tools": [], "tool_choice": "none", "parallel_tool_calls": False}
_STATUS = {"queued": "queued", "running": "in_progress", "error": "failed"}
_ROLES = ("system", "developer", "user", "assistant")
_INTEGER = re.compile(r"-?[0-9]{1,19}")
#: ``input`` as ``_input_messages`` reads it, in JSON Schema (the OpenAPI document).
_INPUT_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "string", "minLength": 1},
    {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["role", "content"],
        "properties": {"type": {"const": "message"}, "role": {"enum": list(_ROLES)},
                       "content": TEXT_CONTENT_SCHEMA}}},
]}


class ResponseRequest(BaseModel):
    # The rest was checked by refuse_unknown; the items are read by _input_messages.
    model_config = ConfigDict(extra="ignore", json_schema_extra=accepted_beyond_fields(NEUTRAL))

    model: str = Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
    input: Annotated[str | list[dict[str, Any]], WithJsonSchema(_INPUT_SCHEMA)]
    instructions: str | None = Field(None, max_length=200_000)
    background: bool = False
    stream: bool = False
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    user: str | None = Field(None, max_length=256)

    _json_integers = field_validator("max_output_tokens", mode="before")(json_integer)


async def _caller(request: web.Request, scope: str) -> tuple[str, str | None]:
    """The response's stream id, and the tenant it must belong to for this caller."""
    principal = await request.app[appkeys.AUTH].principal(request)
    stream_id = stream_id_of(request)
    return stream_id, principal.tenant_for(stream_id, scope)


def stream_id_of(request: web.Request) -> str:
    response_id = request.match_info["response_id"]
    stream_id = response_id.removeprefix("resp_")
    if stream_id == response_id or not keys.is_stream_id(stream_id):
        raise StreamNotFound()
    return stream_id


@openai_errors
async def create_response(request: web.Request) -> web.StreamResponse:
    app = request.app
    principal = await app[appkeys.AUTH].api_key(request, "creating a response")
    body, spec = await read_request(request, ResponseRequest, SUPPORTED, NEUTRAL)
    check_max_tokens(app, spec.max_output_tokens, "max_output_tokens")
    messages = _input_messages(spec)
    facade = {"api": "responses", "background": spec.background,
              "instructions": spec.instructions, "max_output_tokens": spec.max_output_tokens,
              "temperature": spec.temperature, "metadata": spec.metadata or {},
              "user": spec.user}
    job = new_job(app, messages, key=principal.key, tenant=principal.tenant, model=spec.model,
                  max_tokens=spec.max_output_tokens, temperature=spec.temperature,
                  metadata={"user": spec.user} if spec.user else {}, facade=facade)
    stream_id = await submit_request(request, job, principal.key, body)
    if spec.stream:
        return await _stream(request, stream_id, principal.tenant, None)
    if not spec.background:  # an open connection like any other: counted while it waits
        async with app[appkeys.CONNECTIONS].held(job.key_id):
            await _wait_for_end(app, stream_id, principal.tenant)
    return web.json_response(await _describe_now(app, stream_id, principal.tenant),
                             headers={"X-Stream-ID": stream_id})


def _input_messages(spec: ResponseRequest) -> list[dict[str, str]]:
    system = [{"role": "system", "content": spec.instructions}] if spec.instructions else []
    if isinstance(spec.input, str):
        if not spec.input:
            raise InvalidValue("invalid_request", "input must not be empty")
        return [*system, {"role": "user", "content": spec.input}]
    messages = []
    for index, item in enumerate(spec.input):
        where = f"input.{index}"
        if item.get("type", "message") != "message":
            raise InvalidValue("unsupported_parameter",
                               f"{where}: only message items are supported by Tokenwire")
        role = item.get("role")
        if role not in _ROLES:
            raise MalformedRequest("invalid_request", f"{where}.role is not a message role")
        messages.append({"role": str(role), "content": text_of(item.get("content"),
                                                                f"{where}.content")})
    if not messages:
        raise InvalidValue("invalid_request", "input must not be empty")
    return system + messages


@openai_errors
async def get_response(request: web.Request) -> web.StreamResponse:
    app = request.app
    stream_id, tenant = await _caller(request, "read")
    starting_after = _starting_after(request)  # malformed: 400, even where it is not used
    if request.query.get("stream") not in ("true", "1"):
        return web.json_response(await _describe_now(app, stream_id, tenant))
    return await _stream(request, stream_id, tenant, starting_after)


def _starting_after(request: web.Request) -> int | None:
    raw = request.query.get("starting_after")
    if raw is None:
        return None
    if not _INTEGER.fullmatch(raw):  # int() would take " 5", "5_0" and other digits
        raise MalformedRequest("invalid_request", "starting_after must be an integer")
    if int(raw) < -1:
        raise MalformedRequest("invalid_request", "starting_after must be >= -1")
    return int(raw)


@openai_errors
async def cancel_response(request: web.Request) -> web.Response:
    app = request.app
    stream_id, tenant = await _caller(request, "cancel")
    outcome = await cancel(app, stream_id, tenant)
    if outcome.status == "cancelling":  # the worker stops within a second
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await _wait_for_end(app, stream_id, tenant)
    return web.json_response(await _describe_now(app, stream_id, tenant))


async def _stream(request: web.Request, stream_id: str, tenant: str | None,
                  starting_after: int | None) -> web.StreamResponse:
    app = request.app
    store = app[appkeys.STORE]
    snap = await store.snapshot(stream_id)
    if snap is None or (tenant is not None and snap.meta.tenant != tenant):
        raise StreamNotFound()
    position = position_after(starting_after, snap.meta)
    converter = ResponseEvents(f"msg_{stream_id}", _describer(snap),
                               lambda: _final_text(app, stream_id), snap.meta)
    try:
        events = await open_events(app, stream_id, position.cursor, tenant=tenant)
    except StreamComplete:
        events = None
    async with sse_stream(request, {"X-Stream-ID": stream_id}) as response:
        if events is None:
            return response  # nothing after starting_after
        async with delivering(app, stream_id, events.key_id, "responses"):
            async for item in converter.convert(events.events(), position):
                await send_data(response, item, event=str(item["type"]))
    return response


async def _final_text(app: web.Application, stream_id: str) -> str:
    snap = await app[appkeys.STORE].snapshot(stream_id)
    return snap.text if snap is not None else ""


async def _wait_for_end(app: web.Application, stream_id: str, tenant: str | None) -> None:
    """Follow the stream to its terminal event."""
    try:
        events = await open_events(app, stream_id, None, tenant=tenant)
    except StreamComplete:
        return
    async for _ in events.events():
        pass


async def _describe_now(app: web.Application, stream_id: str, tenant: str | None
                        ) -> dict[str, Any]:
    snap = await app[appkeys.STORE].snapshot(stream_id)
    if snap is None or (tenant is not None and snap.meta.tenant != tenant):
        raise StreamNotFound()
    meta, describe = snap.meta, _describer(snap)
    item = {"id": f"msg_{stream_id}", "type": "message", "role": "assistant",
            "status": "completed" if meta.status == "done" else "in_progress",
            "content": [{"type": "output_text", "text": snap.text, "annotations": [],
                         "logprobs": []}]}
    if meta.status in ("done", "cancelled"):
        status, extra = status_of_done(meta.final or {})
        if status != "completed":
            item["status"] = "incomplete"
        return describe(status, [item], usage=usage_of(meta.final or {}), **extra)
    if meta.status == "error":
        final = meta.final or {}
        return describe("failed", [], error={"code": final.get("code"),
                                             "message": final.get("message")})
    return describe(_STATUS.get(meta.status, "in_progress"),
                    [item] if snap.text else [])


def _describer(snap: Snapshot) -> Callable[..., dict[str, Any]]:
    """``describe(status, output, **extra)``: the response object of this stream."""
    meta = snap.meta
    facade = meta.facade or {}

    def describe(status: str, output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": f"resp_{meta.stream_id}", "object": "response",
            "created_at": meta.created_at_ms // 1000, "status": status,
            "background": bool(facade.get("background", False)), "error": None,
            "incomplete_details": None, "instructions": facade.get("instructions"),
            "max_output_tokens": facade.get("max_output_tokens"),
            "metadata": facade.get("metadata") or {}, "model": meta.model, "output": output,
            "parallel_tool_calls": False, "temperature": facade.get("temperature"),
            "text": {"format": {"type": "text"}}, "tool_choice": "none", "tools": [],
            "top_p": None, "truncation": "disabled", "usage": None,
            "user": facade.get("user"), "store": True, **extra}

    return describe
