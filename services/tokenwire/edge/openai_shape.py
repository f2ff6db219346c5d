"""What the OpenAI facades share: OpenAI's error shape, its SSE framing, its
request checks, and ``GET /v1/models``.

OpenAI's error body is ``{"error": {"message", "type", "param", "code"}}`` —
a superset of Tokenwire's ``{"error": {"code", "message"}}``, so one table
(``edge.errors``) still decides the status; only 422 becomes OpenAI's 400.
A parameter Tokenwire does not implement is refused (400
``unsupported_parameter``, naming it), never silently ignored.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response
from pydantic import BaseModel, ValidationError

from tokenwire.apikeys import ApiKey
from tokenwire.edge import keys as appkeys
from tokenwire.edge.bodies import read_json_object
from tokenwire.edge.errors import status_of
from tokenwire.edge.handlers import idempotency_key_of
from tokenwire.edge.instrumentation import count_refusal
from tokenwire.edge.submit import submit
from tokenwire.errors import InvalidValue, MalformedRequest, NotFound, TokenwireError
from tokenwire.events import dumps
from tokenwire.jobs import Job
from tokenwire.redis_client import TRANSPORT_ERRORS

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Parsed = TypeVar("Parsed", bound=BaseModel)

#: A message's content as ``text_of`` reads it, in JSON Schema (the OpenAPI document).
TEXT_CONTENT_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "string"},
    {"type": "array", "items": {
        "type": "object", "required": ["type", "text"],
        "properties": {"type": {"enum": ["text", "input_text", "output_text"]},
                       "text": {"type": "string"}}}},
]}

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 408: "timeout_error", 409: "conflict_error",
          413: "invalid_request_error", 415: "invalid_request_error",
          429: "rate_limit_error"}


def error_object(status: int, code: str, message: str, param: str | None = None
                 ) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"),
                      "param": param, "code": code}}


def error_response(status: int, code: str, message: str, *, param: str | None = None,
                   retry_after: float | None = None) -> web.Response:
    response = web.json_response(error_object(status, code, message, param), status=status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(retry_after)))
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="tokenwire"'
    return response


def openai_errors(handler: Handler) -> Handler:
    """Render every error of ``handler`` in OpenAI's shape (before a response
    has started; once streaming, errors are ``data:`` objects)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except TokenwireError as exc:
            count_refusal(request.app[appkeys.METRICS], exc)
            status = status_of(exc)
            status = 400 if status == 422 else status
            return error_response(status, exc.code, exc.message,
                                  param=getattr(exc, "param", None), retry_after=exc.retry_after)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, "http_error", exc.reason)
        except TRANSPORT_ERRORS as exc:
            log.warning("redis unavailable: %s", exc)
            request.app[appkeys.METRICS].redis_errors.inc()
            return error_response(503, "redis_unavailable", "the message broker is unreachable",
                                  retry_after=1)

    return wrapped


class Unsupported(InvalidValue):
    """A parameter (or value) of the OpenAI API that Tokenwire does not implement."""

    def __init__(self, param: str, message: str | None = None) -> None:
        super().__init__("unsupported_parameter",
                         message or f"the parameter {param!r} is not supported by Tokenwire")
        self.param = param


def accepted_beyond_fields(neutral: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """``json_schema_extra`` of a request model read by ``read_request``: what
    ``refuse_unknown`` lets through besides the model's own fields — each
    parameter of ``neutral`` with its neutral value, any other one as null."""

    def extra(schema: dict[str, Any]) -> None:
        for name, value in neutral.items():
            schema["properties"][name] = {
                "anyOf": [{"const": value}, {"type": "null"}],
                "description": "Not implemented by Tokenwire: accepted with this value only."}
        schema["additionalProperties"] = {
            "type": "null", "description": "Any other parameter: refused unless null."}

    return extra


def refuse_unknown(body: dict[str, Any], supported: Iterable[str],
                   neutral: dict[str, Any] | None = None) -> None:
    """Refuse every field of ``body`` outside ``supported``, unless it has its
    ``neutral`` value (e.g. ``n: 1``, ``logprobs: false``): then it changes nothing."""
    allowed = set(supported) - set(neutral or {})
    for name, value in body.items():
        if name in allowed or value is None:
            continue
        if neutral is not None and name in neutral and _same_json(value, neutral[name]):
            continue
        raise Unsupported(name)


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: ``false`` is not ``0`` (as it is to Python), ``1.0`` is ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same_json, a, b))
    return type(a) is type(b) and bool(a == b)


async def read_request(request: web.Request, model: type[Parsed], supported: Iterable[str],
                       neutral: dict[str, Any]) -> tuple[dict[str, Any], Parsed]:
    """The body, refused if it names a parameter Tokenwire does not implement,
    and parsed as ``model``."""
    body = await read_json_object(request, request.app[appkeys.SETTINGS])
    refuse_unknown(body, supported, neutral)
    try:
        return body, model.model_validate(body, strict=True)  # as handlers.read_job
    except ValidationError as exc:
        raise invalid_request(exc) from exc


def check_max_tokens(app: web.Application, value: int | None, name: str) -> None:
    limit = app[appkeys.SETTINGS].max_tokens_limit
    if value is not None and value > limit:
        raise InvalidValue("invalid_request", f"{name} must be <= {limit}")


async def submit_request(request: web.Request, job: Job, key: ApiKey | None,
                         body: dict[str, Any]) -> str:
    """Create the stream; an ``Idempotency-Key`` (the SDKs' retries) is honoured."""
    fingerprint = hashlib.sha256(dumps(body).encode()).hexdigest()
    return await submit(request.app, job, key, idempotency_key=idempotency_key_of(request),
                        fingerprint=fingerprint)


def invalid_request(exc: ValidationError) -> InvalidValue:
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    error = InvalidValue("invalid_request", f"{param}: {first['msg']}" if param else first["msg"])
    error.param = param  # type: ignore[attr-defined]
    return error


def text_of(content: Any, where: str) -> str:
    """A message's content: a string, or a list of ``{"type": "text", "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "input_text",
                                                                       "output_text"):
                raise Unsupported(where, "only text content is supported by Tokenwire")
            text = part.get("text")
            if not isinstance(text, str):
                raise MalformedRequest("invalid_request", f"{where}: a text part needs 'text'")
            texts.append(text)
        return "".join(texts)
    raise MalformedRequest("invalid_request", f"{where} must be a string or a list of parts")


def sse_stream(request: web.Request, headers: dict[str, str]
               ) -> AbstractAsyncContextManager[EventSourceResponse]:
    """An SSE response (``async with``) in the framing these SDKs read:
    ``data:`` lines (and ``event:`` where the protocol has them) — no ``id:``,
    no ``retry:`` — and ``: ping`` comments, which they skip."""
    settings = request.app[appkeys.SETTINGS]
    return sse_response(request, ping_interval=settings.sse_ping_seconds, headers=headers,
                        send_timeout=settings.send_timeout_seconds, allow_all_methods=True)


async def send_data(response: EventSourceResponse, payload: dict[str, Any] | str,
                    event: str | None = None) -> None:
    await response.send(payload if isinstance(payload, str) else dumps(payload), event=event)


@openai_errors
async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: what this deployment serves, as far as the key may use it."""
    principal = await request.app[appkeys.AUTH].api_key(request, "listing models")
    served = request.app[appkeys.SETTINGS].served_models
    models = [m for m in served if principal.key is None or principal.key.allows_model(m)]
    return web.json_response({"object": "list", "data": [_model(m) for m in models]})


@openai_errors
async def get_model(request: web.Request) -> web.Response:
    principal = await request.app[appkeys.AUTH].api_key(request, "reading a model")
    model = request.match_info["model"]
    served = request.app[appkeys.SETTINGS].served_models
    if model not in served or (principal.key is not None and not principal.key.allows_model(
            model)):
        raise NotFound("model_not_found", f"the model {model!r} does not exist")
    return web.json_response(_model(model))


def _model(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "tokenwire"}
