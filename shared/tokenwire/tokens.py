"""Stream tokens: signed, expiring capabilities a browser carries in a URL.

A token is a JWT (RFC 7519) so that a backend can mint its own with any JWT
library, without calling the edge. Claims (README "Security"):

=========  ==================================================================
``sub``    the resource: ``stream:<stream id>`` or ``conversation:<id>``
``tenant`` the tenant that owns the resource
``scope``  space-separated: ``read`` (follow it: events, WebSocket, status),
           ``cancel``; and for a conversation ``write`` (post messages)
``aud``    ``TOKENWIRE_TOKEN_AUDIENCE`` (default ``tokenwire``)
``iat``    issued at (seconds); ``exp``: expiry (seconds), both required
=========  ==================================================================

Signed HS256 with ``TOKENWIRE_TOKEN_SECRET``, or RS256/ES256/EdDSA by a
backend's private key whose public half the edge holds
(``TOKENWIRE_TOKEN_PUBLIC_KEY``). The algorithm picks the key, never the other
way round: an HS256 token is only ever checked against the secret, so a public
key can never be used as an HMAC secret. An edge with only a public key
verifies tokens but cannot mint them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import jwt

from tokenwire.errors import Unauthorized
from tokenwire.settings import Settings

ASYMMETRIC_ALGORITHMS = ("RS256", "ES256", "EdDSA")
#: Every scope a stream token may carry.
STREAM_SCOPES = frozenset({"read", "cancel"})
#: Every scope a conversation token may carry.
CONVERSATION_SCOPES = frozenset({"read", "write", "cancel"})
_LEEWAY_SECONDS = 5  # clock skew between a minting backend and the edges


@dataclass(frozen=True, slots=True)
class TokenClaims:
    kind: str  # "stream" or "conversation"
    resource_id: str
    tenant: str
    scopes: frozenset[str]
    expires_at: int

    def expired(self) -> bool:
        """Past ``exp`` (and its clock-skew leeway), as ``verify`` would judge it now."""
        return time.time() > self.expires_at + _LEEWAY_SECONDS


class TokenCodec:
    """Mints (with the secret) and verifies stream tokens for one edge."""

    def __init__(self, settings: Settings) -> None:
        self._secret = (settings.token_secret.get_secret_value().encode()
                        if settings.token_secret is not None else None)
        self._public_key = settings.token_public_key
        self._audience = settings.token_audience

    @property
    def can_mint(self) -> bool:
        return self._secret is not None

    def mint(self, kind: str, resource_id: str, tenant: str, scopes: Iterable[str],
             ttl_seconds: int) -> tuple[str, int]:
        """A token and its expiry (Unix seconds)."""
        if self._secret is None:
            raise RuntimeError("this edge has no TOKENWIRE_TOKEN_SECRET: it cannot mint tokens")
        now = int(time.time())
        expires_at = now + ttl_seconds
        claims = {"sub": f"{kind}:{resource_id}", "tenant": tenant,
                  "scope": " ".join(sorted(set(scopes))), "aud": self._audience,
                  "iat": now, "exp": expires_at}
        return jwt.encode(claims, self._secret, algorithm="HS256"), expires_at

    def verify(self, token: str) -> TokenClaims:
        """The token's claims, or ``Unauthorized`` (bad signature, wrong audience,
        expired, malformed). The message never echoes the token."""
        try:
            key, algorithms = self._key_for(token)
            claims = jwt.decode(token, key, algorithms=algorithms, audience=self._audience,
                                leeway=_LEEWAY_SECONDS,
                                options={"require": ["exp", "iat", "sub", "aud"]})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token_expired", "the token has expired") from exc
        except jwt.PyJWTError as exc:  # InvalidKeyError too: an alg that fits no key we hold
            raise Unauthorized("invalid_token", "the token is not valid for this service") from exc
        return _claims_of(claims)

    def _key_for(self, token: str) -> tuple[bytes | str, list[str]]:
        """The one key and the algorithms it may verify. Only an edge holding
        both kinds reads the token's header first (a third of a verify's cost)."""
        if self._public_key is None and self._secret is not None:
            return self._secret, ["HS256"]
        if self._secret is None and self._public_key is not None:
            return self._public_key, list(ASYMMETRIC_ALGORITHMS)
        algorithm = str(jwt.get_unverified_header(token).get("alg"))
        if algorithm == "HS256" and self._secret is not None:
            return self._secret, [algorithm]
        if algorithm in ASYMMETRIC_ALGORITHMS and self._public_key is not None:
            return self._public_key, [algorithm]
        raise Unauthorized("invalid_token", "the token is not valid for this service")


def _claims_of(claims: dict[str, object]) -> TokenClaims:
    subject, tenant, scope = claims.get("sub"), claims.get("tenant"), claims.get("scope", "")
    if not (isinstance(subject, str) and isinstance(tenant, str) and isinstance(scope, str)):
        raise Unauthorized("invalid_token", "the token lacks its sub, tenant or scope")
    kind, _, resource_id = subject.partition(":")
    scopes = frozenset(scope.split())
    if not resource_id or not scopes or not isinstance(claims["exp"], int | float):
        raise Unauthorized("invalid_token", "the token's sub or scope is malformed")
    return TokenClaims(kind, resource_id, tenant, scopes, int(claims["exp"]))
