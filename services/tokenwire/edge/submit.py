"""Creating a stream, whatever the protocol that asked: ``POST /v1/streams``, a
conversation's turn, the OpenAI facades, the AI SDK's chat route.

Each builds a ``Job`` with ``new_job`` and hands it to ``submit``, which checks
what every creation must pass (the edge is not draining, the model is served
and allowed for the key) and records and enqueues it, counted against the
key's limits. ``grant`` makes the answer's stream token and delivery URLs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from tokenwire import keys
from tokenwire.apikeys import ApiKey
from tokenwire.edge import keys as appkeys
from tokenwire.errors import InvalidValue, Unavailable
from tokenwire.jobs import Job, MetadataValue
from tokenwire.settings import BufferMode
from tokenwire.store import CancelOutcome


def new_job(
    app: web.Application, messages: list[dict[str, str]], *, key: ApiKey | None,
    tenant: str | None, model: str | None = None, max_tokens: int | None = None,
    temperature: float | None = None, buffer: BufferMode | None = None,
    metadata: dict[str, MetadataValue] | None = None, idle_cancel_ms: int | None = None,
    conversation: str | None = None, facade: dict[str, Any] | None = None,
    stream_id: str | None = None,
) -> Job:
    """A job with the edge's defaults filled in (and a fresh stream id, unless
    given); with tracing on, the current request's trace context, which the
    worker's spans continue. ``created_at_ms`` is on Redis' clock, like the
    events' append times, so a client's time to first token is one clock's."""
    settings = app[appkeys.SETTINGS]
    return Job(
        stream_id=stream_id or keys.new_stream_id(), messages=messages,
        model=model or settings.default_model_name, max_tokens=max_tokens,
        temperature=temperature, buffer=buffer or settings.default_buffer,
        metadata=metadata or {}, created_at_ms=app[appkeys.CLOCK].now_ms(),
        idle_cancel_ms=idle_cancel_ms, tenant=tenant,
        key_id=key.key_id if key is not None else None,
        conversation=conversation, facade=facade,
        trace=app[appkeys.TRACING].headers() or None,
    )


def check_open(app: web.Application) -> None:
    if app[appkeys.LIFECYCLE].draining:
        raise Unavailable("draining", "this edge is shutting down", retry_after=1)


def check_model(app: web.Application, key: ApiKey | None, model: str) -> None:
    """The model must be one the API key may use and one this deployment serves
    (``TOKENWIRE_MODELS``; unset: the default model only — a caller, or a
    browser's conversation token, must not pick the provider's priciest)."""
    if key is not None and not key.allows_model(model):
        raise InvalidValue("model_not_allowed", f"this API key may not use the model {model!r}")
    if model not in app[appkeys.SETTINGS].served_models:
        raise InvalidValue("model_not_found", f"the model {model!r} is not served here")


async def submit(app: web.Application, job: Job, key: ApiKey | None, *,
                 idempotency_key: str | None = None, fingerprint: str = "",
                 admitted: bool = False) -> str:
    """Record and enqueue ``job`` (see ``StreamStore.create``); returns its stream id.
    ``admitted``: the caller counted it against the key's limits already (and
    takes that back if this fails)."""
    check_open(app)
    check_model(app, key, job.model)
    admission = None if admitted else app[appkeys.LIMITER]
    stream_id = await app[appkeys.STORE].create(job, idempotency_key, fingerprint,
                                                admission=admission)
    app[appkeys.METRICS].streams_created.inc()
    return stream_id


async def cancel(app: web.Application, stream_id: str, tenant: str | None) -> CancelOutcome:
    """Cancel a stream (see ``StreamStore.cancel``); one that was still queued is
    ended right here, so its creator's running slot is freed here too."""
    store = app[appkeys.STORE]
    outcome = await store.cancel(stream_id, tenant)
    if outcome.status == "cancelled":  # no worker will see it to release it
        await app[appkeys.LIMITER].release(outcome.key_id, stream_id)
        await store.deactivate(stream_id)
    return outcome


def urls_of(stream_id: str, token: str | None = None) -> dict[str, str]:
    """The stream's delivery URLs; with ``token``, ready for a browser as they are."""
    base = f"/v1/streams/{stream_id}"
    query = f"?token={token}" if token else ""  # a JWT is URL-safe as it is
    return {"events_url": f"{base}/events{query}", "ws_url": f"{base}/ws{query}"}


def grant(app: web.Application, kind: str, resource_id: str, tenant: str | None,
          scopes: Iterable[str], *, ttl_seconds: int | None = None) -> dict[str, Any]:
    """``{"token", "token_expires_at"?}``: a token for the resource, when this
    edge can mint one (auth on, a secret configured); ``token`` None otherwise."""
    codec = app[appkeys.AUTH].tokens
    if tenant is None or not codec.can_mint:
        return {"token": None}
    ttl = ttl_seconds or app[appkeys.SETTINGS].token_ttl_seconds
    token, expires_at = codec.mint(kind, resource_id, tenant, scopes, ttl)
    return {"token": token, "token_expires_at": expires_at}


def stream_grant(app: web.Application, stream_id: str, tenant: str | None,
                 scopes: Iterable[str], ttl_seconds: int | None = None) -> dict[str, Any]:
    """A stream token and the delivery URLs that carry it."""
    granted = grant(app, "stream", stream_id, tenant, scopes, ttl_seconds=ttl_seconds)
    return {**granted, **urls_of(stream_id, granted["token"])}
