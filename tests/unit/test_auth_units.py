"""Units of auth: key parsing, the log redaction helper, token claims, settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from pydantic import SecretStr, ValidationError

from tokenwire.apikeys import ApiKey, parse_key
from tokenwire.errors import Unauthorized
from tokenwire.redaction import redact_url
from tokenwire.settings import Settings
from tokenwire.tokens import TokenCodec

SECRET = "unit-token-secret-0123456789abcdefghijklmnop"


@pytest.mark.parametrize(("url", "logged"), [
    ("/v1/streams/x/events?token=eyJa.b.c", "/v1/streams/x/events?token=[redacted]"),
    ("/x?last_event_id=a.3&token=twk_k_s&snapshot=1",
     "/x?last_event_id=a.3&token=[redacted]&snapshot=1"),
    ("/x?TOKEN=abc#frag", "/x?TOKEN=[redacted]#frag"),
    ("/x?last_event_id=a.3&snapshot=1", "/x?last_event_id=a.3&snapshot=1"),
    ("/x", "/x"),
])
def test_redact_url(url: str, logged: str) -> None:
    assert redact_url(url) == logged


@pytest.mark.parametrize("presented", [
    "", "twk_", "twk_abc_def", "Bearer twk_x", "twk_" + "a" * 16,
    "twk_" + "A" * 16 + "_" + "b" * 43,  # key ids are lowercase
    "twk_" + "a" * 16 + "_" + "b" * 42,
    "twk_" + "a" * 15 + "{_" + "b" * 43,  # nothing that could shape a Redis key
])
def test_malformed_keys_are_not_parsed(presented: str) -> None:
    assert parse_key(presented) is None


def test_a_key_parses_into_id_and_secret() -> None:
    assert parse_key("twk_" + "a1" * 8 + "_" + "s-_" * 14 + "x") == ("a1" * 8, "s-_" * 14 + "x")


def test_a_record_round_trips_through_its_hash() -> None:
    record = ApiKey("k" * 16, "acme", "0" * 64, 1, ("m1", "m2"), max_running=2,
                    tokens_per_minute=5)
    raw = {k: str(v) for k, v in record.fields().items()}
    assert ApiKey.from_hash("k" * 16, raw) == record
    assert "secret_sha256" not in record.public() and "0" * 64 not in str(record.public())


def test_minted_claims_verify_and_name_resource_tenant_and_scopes() -> None:
    codec = TokenCodec(Settings(_env_file=None, token_secret=SecretStr(SECRET)))
    token, expires_at = codec.mint("stream", "S" * 22, "acme", ["cancel", "read"], 600)
    claims = codec.verify(token)
    assert (claims.kind, claims.resource_id, claims.tenant) == ("stream", "S" * 22, "acme")
    assert claims.scopes == {"read", "cancel"} and claims.expires_at == expires_at
    raw = jwt.decode(token, SECRET, algorithms=["HS256"], audience="tokenwire")
    assert raw["scope"] == "cancel read" and raw["exp"] - raw["iat"] == 600


def test_a_verify_only_edge_cannot_mint_nor_accept_hs256() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    codec = TokenCodec(Settings(_env_file=None, token_public_key=public_pem))
    assert not codec.can_mint
    now = int(time.time())
    claims = {"sub": "stream:" + "S" * 22, "tenant": "acme", "scope": "read",
              "aud": "tokenwire", "iat": now, "exp": now + 60}
    assert codec.verify(jwt.encode(claims, private, algorithm="EdDSA")).tenant == "acme"
    # The public key is never an HMAC secret (the classic algorithm confusion);
    # forged by hand, as PyJWT itself refuses to sign with a PEM.
    with pytest.raises(Unauthorized):
        codec.verify(hs256_by_hand(claims, public_pem.encode()))


def hs256_by_hand(claims: dict[str, object], key: bytes) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


@pytest.mark.parametrize("origins", ["app.example", "https://app.example/", "ftp://x.example"])
def test_cors_origins_must_be_origins(origins: str) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, cors_origins=origins)


def test_a_short_token_secret_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, token_secret=SecretStr("short"))
