"""The admin API: tenants' API keys (``Authorization: Bearer <TOKENWIRE_ADMIN_KEY>``).

Served only when an admin key is configured (otherwise these routes do not
exist: 404). The key itself is in the answer to ``POST`` and nowhere else,
ever; listings show key ids and limits.
"""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import ValidationError

from tokenwire.apikeys import KeySpec
from tokenwire.edge import keys as appkeys
from tokenwire.edge.bodies import read_json_object
from tokenwire.edge.handlers import invalid
from tokenwire.errors import KeyNotFound

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


def setup_admin_routes(app: web.Application) -> None:
    if app[appkeys.SETTINGS].admin_key is None:
        return
    app.router.add_post("/v1/admin/keys", create_key)
    app.router.add_get("/v1/admin/keys", list_keys)
    app.router.add_delete("/v1/admin/keys/{key_id}", revoke_key)
