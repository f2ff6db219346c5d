"""HTTP handlers: validate input, call the store or a transport, shape the answer.

Thin on purpose: domain errors are raised and turned into HTTP by the error
middleware; nothing is written to Redis until the whole request is valid.
Every stream route authenticates its caller first (``auth``) and sees only
the caller's tenant's streams.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from tokenwire import keys
from tokenwire.cursor import Cursor
from tokenwire.edge import keys as appkeys
from tokenwire.edge.auth import Principal
from tokenwire.edge.bodies import read_json_object
from tokenwire.edge.cors import check_websocket_origin
from tokenwire.edge.delivering import delivering
from tokenwire.edge.delivery import send_sse, send_websocket
from tokenwire.edge.follower import Follower, StreamComplete
from tokenwire.edge.submit import cancel, check_open, new_job, stream_grant, submit, urls_of
from tokenwire.errors import (
    Forbidden,
    InvalidValue,
    MalformedRequest,
    StreamGone,
    StreamNotFound,
)
from tokenwire.events import dumps
from tokenwire.jobs import JobOptions, JobRequest
from tokenwire.settings import Settings

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


# --- input ---------------------------------------------------------------------------


def stream_id_of(request: web.Request) -> str:
    stream_id = request.match_info["stream_id"]
    if not keys.is_stream_id(stream_id):
        raise StreamNotFound()  # no stream could ever have this id
    return stream_id


def resume_position(request: web.Request, *, header: bool) -> Cursor | None:
    """The header wins over the query parameter (EventSource sends the header);
    an empty header is no header. A malformed cursor in either is a 400, even
    where the other one wins."""
    from_query = Cursor.parse_optional(request.query.get("last_event_id"))
    from_header = Cursor.parse_optional(request.headers.get("Last-Event-ID")) if header else None
    return from_header or from_query


def invalid(code: str, message: str, exc: ValidationError) -> InvalidValue:
    details: list[dict[str, object]] = [
        {"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()
    ]
    return InvalidValue(code, message, details)


async def read_job(request: web.Request, settings: Settings) -> tuple[JobRequest, str]:
    """Parse and validate a job body; returns it and its fingerprint."""
    body = await read_json_object(request, settings)
    try:
        # Strict: no "5" for an integer, no true for 1 — what the OpenAPI
        # document says a value is, it must be (the model itself stays lax
        # for code that builds it).
        job_request = JobRequest.model_validate(body, strict=True)
        canonical = dumps(job_request.model_dump(mode="json")).encode()
    except ValidationError as exc:
        raise invalid("invalid_job", "the job has invalid values", exc) from exc
    check_limits(job_request, settings, "invalid_job")
    return job_request, hashlib.sha256(canonical).hexdigest()


def check_limits(options: JobOptions, settings: Settings, code: str) -> None:
    """What the edge's settings bound beyond the model's own validation."""
    if options.max_tokens is not None and options.max_tokens > settings.max_tokens_limit:
        raise InvalidValue(code, f"max_tokens must be <= {settings.max_tokens_limit}")
    ttl = options.token_ttl_seconds
    if ttl is not None and ttl > settings.token_max_ttl_seconds:
        raise InvalidValue(code, f"token_ttl_seconds must be <= {settings.token_max_ttl_seconds}")


def require_websocket(request: web.Request) -> None:
    """A plain request to a WebSocket URL is 400 ``websocket_required``."""
    if not web.WebSocketResponse().can_prepare(request).ok:
        raise MalformedRequest("websocket_required",
                               "this URL needs a WebSocket handshake (Upgrade: websocket)")


def idempotency_key_of(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise MalformedRequest("bad_idempotency_key",
                               "Idempotency-Key must be 1-255 printable ASCII characters")
    return key


# --- handlers ------------------------------------------------------------------------


async def create_stream(request: web.Request) -> web.StreamResponse:
    principal = await request.app[appkeys.AUTH].api_key(request)
    return await create_stream_as(request, principal)


async def create_demo_stream(request: web.Request) -> web.StreamResponse:
    """``POST /demo/streams`` (``tokenwire dev`` only): what an app's backend
    does, as a stand-in — the same body and answer as ``POST /v1/streams``,
    made with the dev API key held here, so the browser never holds a key."""
    return await create_stream_as(request, await demo_principal(request))


async def demo_principal(request: web.Request) -> Principal:
    """The dev API key's caller, for the demo's backend stand-ins (``tokenwire dev``).

    Only for a request addressed to ``localhost`` or an IP address: a page on
    any website could otherwise reach them through DNS rebinding (its own
    domain re-pointed at 127.0.0.1, same-origin to the browser) and spend the
    developer's model budget with the dev key."""
    settings = request.app[appkeys.SETTINGS]
    if settings.demo_api_key is None:  # the routes exist only when it is set
        raise web.HTTPNotFound()
    if not _addressed_by_ip_or_localhost(request):
        raise Forbidden("demo_host_not_allowed",
                        "the demo answers only at localhost or an IP address")
    return await request.app[appkeys.AUTH].key_principal(
        settings.demo_api_key.get_secret_value())


def _addressed_by_ip_or_localhost(request: web.Request) -> bool:
    host = (request.url.host or "").lower().strip("[]")
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def create_stream_as(request: web.Request, principal: Principal) -> web.StreamResponse:
    app = request.app
    settings = app[appkeys.SETTINGS]
    check_open(app)
    job_request, fingerprint = await read_job(request, settings)
    job = new_job(
        app, job_request.chat_messages(), key=principal.key, tenant=principal.tenant,
        model=job_request.model, max_tokens=job_request.max_tokens,
        temperature=job_request.temperature, buffer=job_request.buffer,
        metadata=job_request.metadata, idle_cancel_ms=job_request.idle_cancel_ms())
    stream_id = await submit(app, job, principal.key,
                             idempotency_key=idempotency_key_of(request), fingerprint=fingerprint)
    if "text/event-stream" in request.headers.get("Accept", ""):
        follower = await follower_for(request, stream_id, None, tenant=principal.tenant)
        async with delivering(app, stream_id, follower.key_id, "sse"):
            return await send_sse(request, follower, headers={"X-Stream-ID": stream_id})
    body: dict[str, Any] = {"id": stream_id, "status": "queued"}
    body.update(stream_grant(app, stream_id, principal.tenant, job_request.token_scopes,
                             job_request.token_ttl_seconds))
    return web.json_response(body, status=202, headers={"Location": f"/v1/streams/{stream_id}"})


async def stream_events(request: web.Request) -> web.StreamResponse:
    principal = await request.app[appkeys.AUTH].principal(request)
    stream_id = stream_id_of(request)
    tenant = principal.tenant_for(stream_id, "read")
    position = resume_position(request, header=True)
    want_snapshot = request.query.get("snapshot") in ("1", "true")
    follower = await follower_for(request, stream_id, position, want_snapshot, tenant=tenant)
    async with delivering(request.app, stream_id, follower.key_id, "sse"):
        return await send_sse(request, follower)


async def stream_websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    check_websocket_origin(request, app[appkeys.SETTINGS])
    principal = await app[appkeys.AUTH].principal(request)
    stream_id = stream_id_of(request)
    tenant = principal.tenant_for(stream_id, "read")
    position = resume_position(request, header=False)
    require_websocket(request)  # before any Redis work
    try:
        follower: Follower | None = await follower_for(request, stream_id, position, tenant=tenant)
    except StreamComplete:
        follower = None

    async def cancel() -> None:
        if principal.may(stream_id, "cancel"):  # a read-only token's cancel is ignored
            await _cancel(request, stream_id, tenant)

    async with delivering(app, stream_id, follower.key_id if follower else None, "ws"):
        return await send_websocket(request, follower, cancel)


async def stream_status(request: web.Request) -> web.Response:
    principal = await request.app[appkeys.AUTH].principal(request)
    stream_id = stream_id_of(request)
    tenant = principal.tenant_for(stream_id, "read")
    snap = await request.app[appkeys.STORE].snapshot(stream_id)
    if snap is None or (tenant is not None and snap.meta.tenant != tenant):
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
        **urls_of(stream_id),
    }
    if meta.final is not None:
        body["done" if meta.status in ("done", "cancelled") else "error"] = meta.final
    return web.json_response(body)


async def cancel_stream(request: web.Request) -> web.Response:
    principal = await request.app[appkeys.AUTH].principal(request)
    stream_id = stream_id_of(request)
    status = await _cancel(request, stream_id, principal.tenant_for(stream_id, "cancel"))
    return web.json_response({"id": stream_id, "status": status}, status=202)


async def _cancel(request: web.Request, stream_id: str, tenant: str | None) -> str:
    return (await cancel(request.app, stream_id, tenant)).status


async def follower_for(
    request: web.Request, stream_id: str, position: Cursor | None, want_snapshot: bool = False,
    *, tenant: str | None,
) -> Follower:
    app = request.app
    check_open(app)
    settings = app[appkeys.SETTINGS]
    watch = app[appkeys.REDIS_WATCH]

    async def redis_came_back() -> bool:
        return await watch.came_back_within(settings.edge_rebuild_grace_seconds)

    try:
        return await Follower.open(
            app[appkeys.BROKER], app[appkeys.VIEWERS], stream_id, position,
            want_snapshot=want_snapshot, tenant=tenant, redis_came_back=redis_came_back,
            queue_size=settings.subscriber_queue_size,
            on_lag=app[appkeys.METRICS].subscriber_lagged,
        )
    except (StreamComplete, StreamGone) as exc:  # a resume answered before any delivery
        if position is not None:
            app[appkeys.METRICS].resumed("complete" if isinstance(exc, StreamComplete)
                                         else "gone")
        raise
