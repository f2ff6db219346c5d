"""HTTP handlers: validate input, call the store or a transport, shape the answer.

Thin on purpose: domain errors are raised and turned into HTTP by the error
middleware; nothing is written to Redis until the whole request is valid.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from tokenwire import keys
from tokenwire.cursor import Cursor
from tokenwire.edge import keys as appkeys
from tokenwire.edge.delivery import send_sse, send_websocket
from tokenwire.edge.follower import Follower, StreamComplete
from tokenwire.errors import (
    InvalidValue,
    MalformedRequest,
    PayloadTooLarge,
    StreamNotFound,
    Unavailable,
    UnsupportedMediaType,
)
from tokenwire.events import dumps
from tokenwire.jobs import Job, JobRequest
from tokenwire.settings import Settings

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


# --- input ---------------------------------------------------------------------------


def stream_id_of(request: web.Request) -> str:
    stream_id = request.match_info["stream_id"]
    if not keys.is_stream_id(stream_id):
        raise StreamNotFound()  # no stream could ever have this id
    return stream_id


def resume_position(request: web.Request, *, header: bool) -> Cursor | None:
    """The header wins over the query parameter (EventSource sends the header)."""
    raw = request.headers.get("Last-Event-ID") if header else None
    if raw is None:
        raw = request.query.get("last_event_id")
    return Cursor.parse_optional(raw)


async def read_job(request: web.Request, settings: Settings) -> tuple[JobRequest, str]:
    """Parse and validate a job body; returns it and its fingerprint."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("unsupported_media_type", "send Content-Type: application/json")
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise PayloadTooLarge("too_large", f"the body exceeds {settings.max_body_bytes} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge("too_large", f"the body exceeds {settings.max_body_bytes} bytes"
                              ) from exc
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest("malformed_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MalformedRequest("malformed_json", "the body must be a JSON object")
    try:
        job_request = JobRequest.model_validate(body)
        canonical = dumps(job_request.model_dump(mode="json")).encode()
    except ValidationError as exc:
        details: list[dict[str, object]] = [
            {"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()
        ]
        raise InvalidValue("invalid_job", "the job has invalid values", details) from exc
    except UnicodeEncodeError as exc:  # lone surrogates from "\ud800" escapes
        raise InvalidValue("invalid_job", "text must be valid Unicode") from exc
    if job_request.max_tokens is not None and job_request.max_tokens > settings.max_tokens_limit:
        raise InvalidValue("invalid_job", f"max_tokens must be <= {settings.max_tokens_limit}")
    return job_request, hashlib.sha256(canonical).hexdigest()


def idempotency_key_of(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise MalformedRequest("bad_idempotency_key",
                               "Idempotency-Key must be 1-255 printable ASCII characters")
    return key


def urls_of(request: web.Request, stream_id: str) -> dict[str, str]:
    base = f"/v1/streams/{stream_id}"
    return {"events_url": f"{base}/events", "ws_url": f"{base}/ws"}


# --- handlers ------------------------------------------------------------------------


def refuse_while_draining(app: web.Application) -> None:
    """A draining edge takes nothing new: the client goes to another edge."""
    if app[appkeys.LIFECYCLE].draining:
        raise Unavailable("draining", "this edge is shutting down", retry_after=1)


async def create_stream(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[appkeys.SETTINGS]
    refuse_while_draining(app)
    job_request, fingerprint = await read_job(request, settings)
    idempotency_key = idempotency_key_of(request)
    job = Job(
        stream_id=keys.new_stream_id(),
        messages=job_request.chat_messages(),
        model=job_request.model or settings.default_model_name,
        max_tokens=job_request.max_tokens,
        temperature=job_request.temperature,
        buffer=job_request.buffer or settings.default_buffer,
        metadata=job_request.metadata,
        created_at_ms=int(time.time() * 1000),
        idle_cancel_ms=job_request.idle_cancel_ms(),
    )
    stream_id = await app[appkeys.STORE].create(job, idempotency_key, fingerprint)
    app[appkeys.METRICS].streams_created.inc()
    if "text/event-stream" in request.headers.get("Accept", ""):
        follower = await _follower(request, stream_id, None)
        return await send_sse(request, follower, headers={"X-Stream-ID": stream_id})
    body = {"id": stream_id, "status": "queued", **urls_of(request, stream_id)}
    return web.json_response(body, status=202, headers={"Location": f"/v1/streams/{stream_id}"})


async def stream_events(request: web.Request) -> web.StreamResponse:
    stream_id = stream_id_of(request)
    position = resume_position(request, header=True)
    want_snapshot = request.query.get("snapshot") in ("1", "true")
    follower = await _follower(request, stream_id, position, want_snapshot)
    return await send_sse(request, follower)


async def stream_websocket(request: web.Request) -> web.StreamResponse:
    stream_id = stream_id_of(request)
    position = resume_position(request, header=False)
    try:
        follower: Follower | None = await _follower(request, stream_id, position)
    except StreamComplete:
        follower = None
    return await send_websocket(request, follower)


async def stream_status(request: web.Request) -> web.Response:
    stream_id = stream_id_of(request)
    snap = await request.app[appkeys.STORE].snapshot(stream_id)
    if snap is None:
        raise StreamNotFound()
    meta = snap.meta
    body: dict[str, Any] = {
        "id": stream_id,
        "status": meta.status,
        "model": meta.model,
        "epoch": meta.epoch,
        "attempt": meta.attempt,
        "cursor": f"{meta.epoch}.{meta.last_seq}" if meta.epoch else None,
        "text": snap.text,
        "tokens": meta.tokens,
        "created_at_ms": meta.created_at_ms,
        "finished_at_ms": meta.finished_at_ms,
        **urls_of(request, stream_id),
    }
    if meta.final is not None:
        body["done" if meta.status in ("done", "cancelled") else "error"] = meta.final
    return web.json_response(body)


async def cancel_stream(request: web.Request) -> web.Response:
    stream_id = stream_id_of(request)
    status = await request.app[appkeys.STORE].cancel(stream_id)
    return web.json_response({"id": stream_id, "status": status}, status=202)


async def _follower(
    request: web.Request, stream_id: str, position: Cursor | None, want_snapshot: bool = False
) -> Follower:
    app = request.app
    refuse_while_draining(app)
    settings = app[appkeys.SETTINGS]
    watch = app[appkeys.REDIS_WATCH]

    async def redis_came_back() -> bool:
        return await watch.came_back_within(settings.edge_rebuild_grace_seconds)

    return await Follower.open(
        app[appkeys.STORE], app[appkeys.HUB], app[appkeys.VIEWERS], stream_id, position,
        idle_resync=settings.idle_resync_seconds, want_snapshot=want_snapshot,
        redis_came_back=redis_came_back,
    )
