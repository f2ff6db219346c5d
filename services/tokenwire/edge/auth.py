"""Who is calling: an API key (a backend), a stream token (a browser), the admin key.

Credentials come as ``Authorization: Bearer <credential>`` or, where a browser
cannot send headers (``EventSource``, the WebSocket constructor), as
``?token=<credential>``; the header wins. They are checked on every request —
every connect and every resume: there is no session.

- An API key (``twk_…``, see ``tokenwire.apikeys``) acts for its tenant: it
  creates streams and may read and cancel every stream of that tenant.
- A stream token (a JWT, see ``tokenwire.tokens``) acts on one stream, with
  its scopes (``read``; ``cancel``); a conversation token on one conversation
  (``read``, ``write``: post messages, ``cancel``).
- A stream of another tenant, or another stream than a token's, is answered
  exactly as an unknown stream (404): existence does not leak.

With ``TOKENWIRE_AUTH_DISABLED=true`` every request is ``ANONYMOUS``: no key is
needed and streams have no tenant.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web

from tokenwire.apikeys import KEY_PREFIX, ApiKey, KeyStore, verify
from tokenwire.errors import ConversationNotFound, Forbidden, StreamNotFound, Unauthorized
from tokenwire.settings import Settings
from tokenwire.tokens import TokenClaims, TokenCodec

_CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. ``tenant`` None: auth is disabled (everything is allowed)."""

    tenant: str | None
    key: ApiKey | None = None
    token: TokenClaims | None = None

    def tenant_for(self, stream_id: str, scope: str) -> str | None:
        """The tenant that must own ``stream_id`` for this caller to ``scope`` it.
        A token names one stream: another one is ``StreamNotFound``; a scope it
        does not carry is ``Forbidden``."""
        if self.token is not None:
            if self.token.kind != "stream" or self.token.resource_id != stream_id:
                raise StreamNotFound()
            if scope not in self.token.scopes:
                raise Forbidden("insufficient_scope", f"this token does not allow {scope}")
        return self.tenant

    def may(self, stream_id: str, scope: str) -> bool:
        """Whether ``tenant_for`` would pass for a stream this caller can see."""
        return self.token is None or (self.token.resource_id == stream_id
                                      and scope in self.token.scopes)

    def tenant_for_conversation(self, conversation_id: str, scope: str) -> str | None:
        """``tenant_for`` for a conversation: an API key of its tenant may do
        anything; a conversation token only on its conversation, within its
        scopes (``read``, ``write``, ``cancel``); a stream token never."""
        if self.token is not None:
            if self.token.kind != "conversation" or self.token.resource_id != conversation_id:
                raise ConversationNotFound()
            if scope not in self.token.scopes:
                raise Forbidden("insufficient_scope", f"this token does not allow {scope}")
        return self.tenant

    def may_in_conversation(self, scope: str) -> bool:
        """Whether this caller (already checked for the conversation) has ``scope``."""
        return self.token is None or scope in self.token.scopes

    def check_unexpired(self) -> None:
        """For a caller checked once and kept (an open WebSocket): its token
        must still be valid for each new command."""
        if self.token is not None and self.token.expired():
            raise Unauthorized("token_expired", "the token has expired")


ANONYMOUS = Principal(tenant=None)


def auth_problem(settings: Settings) -> str | None:
    """Why an edge must not start with these settings, if it must not."""
    if settings.auth_disabled:
        return None
    if settings.token_secret is None and settings.token_public_key is None:
        return ("no auth configured: set TOKENWIRE_TOKEN_SECRET (or TOKENWIRE_TOKEN_PUBLIC_KEY),"
                " or TOKENWIRE_AUTH_DISABLED=true to let anyone create and read any stream")
    return None


def bearer(request: web.Request) -> str | None:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip() or None


class KeyCache:
    """API key records by key id, trusted for ``ttl`` seconds (absent ones too),
    so that a busy edge does not ask Redis on every request — and a revoked key
    stops working on every edge within ``ttl``. Bounded, least recently used
    out first, in constant time: a flood of made-up key ids costs a lookup
    each, never a scan of the cache."""

    def __init__(self, store: KeyStore, ttl: float) -> None:
        self._store = store
        self._ttl = ttl
        self._entries: OrderedDict[str, tuple[ApiKey | None, float]] = OrderedDict()

    async def get(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._entries.get(key_id)
        if cached is not None and cached[1] > now:
            self._entries.move_to_end(key_id)
            return cached[0]
        record = await self._store.get(key_id)
        if self._ttl > 0:
            self._entries[key_id] = (record, now + self._ttl)
            self._entries.move_to_end(key_id)
            if len(self._entries) > _CACHE_MAX_ENTRIES:
                self._entries.popitem(last=False)
        return record

    async def verify(self, presented: str) -> ApiKey | None:
        return await verify(presented, self.get)

    def forget(self, key_id: str) -> None:
        self._entries.pop(key_id, None)


class Authenticator:
    def __init__(self, settings: Settings, keys: KeyCache) -> None:
        self._disabled = settings.auth_disabled
        self._keys = keys
        self._codec = TokenCodec(settings)
        self._admin_key = (settings.admin_key.get_secret_value()
                           if settings.admin_key is not None else None)
        self._metrics_key = (settings.metrics_key.get_secret_value()
                             if settings.metrics_key is not None else self._admin_key)

    @property
    def tokens(self) -> TokenCodec:
        return self._codec

    @property
    def enabled(self) -> bool:
        return not self._disabled

    async def principal(self, request: web.Request) -> Principal:
        """The caller of a stream route: an API key or a stream token."""
        if self._disabled:
            return ANONYMOUS
        credential = bearer(request) or request.query.get("token")
        if not credential:
            raise Unauthorized("unauthorized", "send an API key or a stream token "
                               "(Authorization: Bearer …, or ?token=…)")
        if credential.startswith(KEY_PREFIX):
            return await self.key_principal(credential)
        claims = self._codec.verify(credential)
        return Principal(tenant=claims.tenant, token=claims)

    async def api_key(self, request: web.Request, action: str = "creating a stream"
                      ) -> Principal:
        """The caller of a route that needs an API key (creating a stream)."""
        principal = await self.principal(request)
        if principal.token is not None:
            raise Forbidden("api_key_required", f"{action} needs an API key, not a token")
        return principal

    async def key_principal(self, presented: str) -> Principal:
        if self._disabled:
            return ANONYMOUS
        record = await self._keys.verify(presented)
        if record is None:
            raise Unauthorized("invalid_api_key", "the API key is not valid")
        return Principal(tenant=record.tenant, key=record)

    async def key_record(self, key_id: str) -> ApiKey | None:
        """A key's limits, as cached (no secret involved)."""
        return await self._keys.get(key_id)

    def forget_key(self, key_id: str) -> None:
        """Drop a cached record (the key was just revoked through this edge)."""
        self._keys.forget(key_id)

    def check_admin(self, request: web.Request) -> None:
        """The admin key, compared in constant time."""
        if not _presents(request, self._admin_key):
            raise Unauthorized("unauthorized", "this route needs the admin key")

    def check_metrics(self, request: web.Request) -> None:
        """The metrics key (``TOKENWIRE_METRICS_KEY``, else the admin key)."""
        if not _presents(request, self._metrics_key):
            raise Unauthorized("unauthorized", "this route needs the metrics key")


def _presents(request: web.Request, secret: str | None) -> bool:
    """The request's bearer credential is ``secret`` (compared in constant time)."""
    presented = bearer(request)
    return secret is not None and presented is not None and hmac.compare_digest(
        presented.encode(), secret.encode())
