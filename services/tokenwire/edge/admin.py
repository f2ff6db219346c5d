"""The admin API (``Authorization: Bearer <TOKENWIRE_ADMIN_KEY>``): tenants'
API keys, and what the operator's console (``/admin``) reads and does — live
streams, the operations journal, dead letters (and their replay), per-key
usage, cancelling any stream.

Served only when an admin key is configured (otherwise these routes do not
exist: 404). An API key itself is in the answer to ``POST`` and nowhere else,
ever; listings show key ids and limits. Every action (a cancel, a replay) is
logged and written to the journal with what it did: the audit trail.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web
from pydantic import ValidationError

from tokenwire.apikeys import KeySpec
from tokenwire.edge import keys as appkeys
from tokenwire.edge import operations
from tokenwire.edge.bodies import read_json_object
from tokenwire.edge.handlers import invalid, stream_id_of
from tokenwire.edge.pages import admin_asset, admin_page
from tokenwire.edge.submit import cancel
from tokenwire.errors import KeyNotFound, MalformedRequest

log = logging.getLogger(__name__)


async def create_key(request: web.Request) -> web.Response:
    request.app[appkeys.AUTH].check_admin(request)
    body = await read_json_object(request, request.app[appkeys.SETTINGS])
    try:
        spec = KeySpec.model_validate(body, strict=True)  # as handlers.read_job
    except ValidationError as exc:
        raise invalid("invalid_key_spec", "the key has invalid values", exc) from exc
    record, key = await request.app[appkeys.KEY_STORE].create(spec)
    log.info("API key created", extra={"key_id": record.key_id, "tenant": record.tenant})
    return web.json_response({**record.public(), "key": key}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    request.app[appkeys.AUTH].check_admin(request)
    records = await request.app[appkeys.KEY_STORE].list()
    return web.json_response({"keys": [record.public() for record in records]})


async def revoke_key(request: web.Request) -> web.Response:
    request.app[appkeys.AUTH].check_admin(request)
    key_id = request.match_info["key_id"]
    if not await request.app[appkeys.KEY_STORE].revoke(key_id):
        raise KeyNotFound()
    request.app[appkeys.AUTH].forget_key(key_id)  # at once here; other edges within their TTL
    log.info("API key revoked", extra={"key_id": key_id})
    return web.json_response({"key_id": key_id, "revoked": True})


# --- the console's API ----------------------------------------------------------------

#: ASCII digits only, and few: ``str.isdigit`` takes "²", which ``int`` refuses.
_LIMIT = re.compile(r"^[0-9]{1,6}$")


def _limit(request: web.Request, default: int, most: int) -> int:
    raw = request.query.get("limit", str(default))
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= most:
        raise MalformedRequest("bad_limit", f"limit must be a whole number from 1 to {most}")
    return int(raw)


async def live_streams(request: web.Request) -> web.Response:
    """Unfinished streams with their figures and viewers on every edge."""
    app = request.app
    app[appkeys.AUTH].check_admin(request)
    body = await operations.live_streams(app[appkeys.REDIS], app[appkeys.CLOCK],
                                         _limit(request, 100, 500))
    return web.json_response(body)


async def journal(request: web.Request) -> web.Response:
    """Recent restarts, resets, errors, dead letters and operators' actions."""
    request.app[appkeys.AUTH].check_admin(request)
    entries = await request.app[appkeys.JOURNAL].recent(_limit(request, 50, 500))
    return web.json_response({"entries": [entry.public() for entry in entries]})


async def dead_letters(request: web.Request) -> web.Response:
    request.app[appkeys.AUTH].check_admin(request)
    listed = await operations.dead_letters(request.app[appkeys.REDIS],
                                           request.app[appkeys.SETTINGS].job_partitions,
                                           _limit(request, 20, 200))
    return web.json_response({"dead_letters": listed})


async def replay_dead_letter(request: web.Request) -> web.Response:
    """201 with the new stream; 200 with the same stream when it was replayed before."""
    app = request.app
    app[appkeys.AUTH].check_admin(request)
    entry_id = request.match_info["entry_id"]  # checked by ``operations.replay``
    stream_id, replayed = await operations.replay(
        app[appkeys.REDIS], app[appkeys.STORE], entry_id, app[appkeys.SETTINGS].job_partitions,
        app[appkeys.TRACING].headers() or None)
    if replayed:
        log.info("dead letter replayed (admin)",
                 extra={"dead_letter": entry_id, "stream_id": stream_id})
        await app[appkeys.JOURNAL].record("replay", stream_id, dead_letter=entry_id)
    return web.json_response({"dead_letter": entry_id, "stream_id": stream_id,
                              "replayed": replayed}, status=201 if replayed else 200)


async def cancel_any_stream(request: web.Request) -> web.Response:
    """Cancel a stream of any tenant (idempotent, like the tenant's own cancel)."""
    app = request.app
    app[appkeys.AUTH].check_admin(request)
    stream_id = stream_id_of(request)
    outcome = await cancel(app, stream_id, None)
    log.info("stream cancelled (admin): %s", outcome.status, extra={"stream_id": stream_id})
    await app[appkeys.JOURNAL].record("cancel", stream_id, status=outcome.status, by="admin")
    return web.json_response({"id": stream_id, "status": outcome.status}, status=202)


async def key_usage(request: web.Request) -> web.Response:
    """Every API key's limits and what it uses now."""
    app = request.app
    app[appkeys.AUTH].check_admin(request)
    rows = await operations.usage(app[appkeys.REDIS], app[appkeys.KEY_STORE])
    return web.json_response({"keys": rows})


def setup_admin_routes(app: web.Application) -> None:
    if app[appkeys.SETTINGS].admin_key is None:
        return
    app.router.add_post("/v1/admin/keys", create_key)
    app.router.add_get("/v1/admin/keys", list_keys)
    app.router.add_delete("/v1/admin/keys/{key_id}", revoke_key)
    app.router.add_get("/v1/admin/streams", live_streams)
    app.router.add_post("/v1/admin/streams/{stream_id}/cancel", cancel_any_stream)
    app.router.add_get("/v1/admin/journal", journal)
    app.router.add_get("/v1/admin/dead-letters", dead_letters)
    app.router.add_post("/v1/admin/dead-letters/{entry_id}/replay", replay_dead_letter)
    app.router.add_get("/v1/admin/usage", key_usage)
    app.router.add_get("/admin", admin_page)
    app.router.add_get("/admin/{name:console\\.(?:js|css)}", admin_asset)
