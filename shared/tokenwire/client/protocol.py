"""What the sync and the async client share: URLs, errors, the retry policy,
and the decisions of following a stream (``FollowState``). No I/O here: each
client only moves bytes between httpx and these decisions."""

from __future__ import annotations

import json
import random
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx2

from tokenwire.client.sse import SseMessage, SseParser
from tokenwire.client.transcript import STREAM_EVENT_TYPES, ClientEvent, Transcript

_STREAM_ID = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
#: Answers worth another try: the edge or a proxy in front of it is busy or away.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: The longest ``Retry-After`` honoured as given.
MAX_RETRY_AFTER = 60.0
#: The edge pings an idle SSE response at least every 15 s: 60 s of silence is a dead line.
DEFAULT_TIMEOUT = httpx2.Timeout(10.0, read=60.0)


class ClientError(Exception):
    """Base of the client's errors."""


class HTTPStatusError(ClientError):
    """The edge answered with an error that retrying will not change (or retries ran out).

    ``status`` 401/403 (credentials), 404 (no such stream, or not yours), 410 (its
    record expired), 400/422 (bad input) …; ``code`` and ``message`` are the
    edge's ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class GaveUp(ClientError):
    """The edge stayed unreachable (or busy) through every retry the policy allows."""


#: The name the first client version used for its HTTP errors.
TokenwireError = HTTPStatusError


def error_of(status: int, body: bytes) -> HTTPStatusError:
    try:
        decoded = json.loads(body)
        error = decoded["error"]
        return HTTPStatusError(status, str(error["code"]), str(error["message"]), decoded)
    except (ValueError, KeyError, TypeError):
        return HTTPStatusError(status, f"http_{status}", body.decode("utf-8", "replace")[:200])


@dataclass(frozen=True)
class RetryPolicy:
    """Reconnect and retry delays: exponential from ``initial_delay``, capped at
    ``max_delay``, with jitter (each delay is 50-100 % of its step, so clients
    dropped together do not come back together); a server's ``Retry-After``
    is honoured (up to a minute). ``max_attempts`` bounds the consecutive tries
    that make no progress, the first included (None: never give up)."""

    initial_delay: float = 0.25
    max_delay: float = 10.0
    max_attempts: int | None = 12

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        step = min(self.max_delay, self.initial_delay * 2.0 ** min(attempt, 32))
        jittered = step * (0.5 + random.random() / 2)  # jitter, not crypto
        if retry_after is not None:
            return max(jittered, min(retry_after, MAX_RETRY_AFTER))
        return jittered


def retry_after_of(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare here; the backoff applies


@dataclass(frozen=True)
class CreatedStream:
    """``POST /v1/streams``'s answer: ``events_url`` and ``ws_url`` are absolute
    (and carry the stream token when the edge issues one)."""

    id: str
    events_url: str
    ws_url: str | None
    body: dict[str, Any] = field(repr=False)

    @classmethod
    def from_answer(cls, base_url: str, body: dict[str, Any]) -> CreatedStream:
        stream_id = str(body["id"])
        events = urljoin(base_url + "/", str(body.get("events_url")
                                             or f"/v1/streams/{stream_id}/events"))
        ws = body.get("ws_url")
        return cls(stream_id, events, urljoin(base_url + "/", str(ws)) if ws else None, body)

    @property
    def cancel_url(self) -> str:
        return str(self.body.get("cancel_url") or sibling_url(self.events_url, "/cancel"))


#: What the follow methods accept: a stream id, its ``events_url`` (absolute or
#: relative to the client's base URL), or the ``CreatedStream`` from ``create``.
StreamRef = str | CreatedStream


def events_url_of(base_url: str, stream: StreamRef) -> str:
    if isinstance(stream, CreatedStream):
        return stream.events_url
    if _STREAM_ID.fullmatch(stream):
        return f"{base_url}/v1/streams/{stream}/events"
    return urljoin(base_url + "/", stream)


def sibling_url(events_url: str, suffix: str) -> str:
    """``…/streams/{id}/events?token=…`` → ``…/streams/{id}{suffix}?token=…``:
    the status (``""``) or cancel (``"/cancel"``) URL, with the same token."""
    parts = urlsplit(events_url)
    path = parts.path.removesuffix("/events") + suffix
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def sse_headers(headers: dict[str, str], last_event_id: str | None) -> dict[str, str]:
    resumed = {**headers, "Accept": "text/event-stream"}
    if last_event_id is not None:
        resumed["Last-Event-ID"] = last_event_id
    return resumed


def stream_event_of(message: SseMessage | None) -> ClientEvent | None:
    """The stream event in an SSE message; None for heartbeats, notices (no id)
    and any type outside the contract."""
    if message is None or message.id is None or message.event not in STREAM_EVENT_TYPES:
        return None
    return ClientEvent(message.id, message.event, json.loads(message.data))


class FollowState:
    """Following one stream through reconnects: which headers to send, what an
    answer means, what each line adds to the transcript, how long to wait."""

    def __init__(self, events_url: str, transcript: Transcript, policy: RetryPolicy,
                 headers: dict[str, str]) -> None:
        self.events_url = events_url
        self.transcript = transcript
        self._policy = policy
        self._headers = headers
        self._parser = SseParser()
        self._failures = 0  # consecutive tries without an event
        self._retry_after: float | None = None
        self._last_error: Exception | None = None

    def request_headers(self) -> dict[str, str]:
        return sse_headers(self._headers, self.transcript.last_id)

    def on_answer(self, status: int, headers: Any, body: bytes = b"",
                  ) -> Literal["read", "finished", "retry"]:
        """``read`` the event stream (200); ``finished`` (204: nothing after our
        cursor); ``retry`` later (busy, away); anything else raises."""
        self._parser = SseParser()
        if status == 200:
            return "read"
        if status == 204:
            return "finished"
        if status in RETRYABLE_STATUSES:
            self._retry_after = retry_after_of(headers.get("Retry-After"))
            self._last_error = error_of(status, body)
            return "retry"
        raise error_of(status, body)

    def on_line(self, line: str) -> ClientEvent | None:
        """The stream event this line completes, applied to the transcript; notices,
        heartbeats and anything outside the contract are skipped."""
        event = stream_event_of(self._parser.feed(line))
        if event is None:
            return None
        self.transcript.apply(event)
        self._failures = 0
        return event

    def on_transport_error(self, error: Exception) -> None:
        self._last_error = error
        self._retry_after = None

    def next_delay(self) -> float:
        """How long to wait before reconnecting; ``GaveUp`` past the policy's bound.
        A connection the server ended cleanly after events resumes after its
        ``retry:`` (as EventSource does); failures back off."""
        if self._failures == 0 and self._last_error is None and self._parser.retry_ms:
            self._failures += 1
            return self._parser.retry_ms / 1000
        attempt, self._failures = self._failures, self._failures + 1
        limit = self._policy.max_attempts
        if limit is not None and self._failures >= limit:
            raise GaveUp(f"gave up on {self.events_url} after {self._failures} tries: "
                         f"{self._last_error}") from self._last_error
        delay = self._policy.delay(attempt, self._retry_after)
        self._retry_after, self._last_error = None, None
        return delay


class ClientBase:
    """What both clients hold and compute without I/O: the base URL, the retry
    policy, the credentials, and every URL and header a call needs."""

    def __init__(self, base_url: str, api_key: str | None, retry: RetryPolicy | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _create_request(self, idempotency_key: str | None) -> tuple[str, dict[str, str]]:
        """URL and headers of ``create``: a fresh ``Idempotency-Key`` unless one is
        given, so that a retried create returns the same stream."""
        key = idempotency_key or uuid.uuid4().hex
        return f"{self.base_url}/v1/streams", {**self._headers, "Idempotency-Key": key}

    def _status_url(self, stream: StreamRef) -> str:
        return sibling_url(events_url_of(self.base_url, stream), "")

    def _cancel_url(self, stream: StreamRef) -> str:
        if isinstance(stream, CreatedStream):
            return stream.cancel_url
        return sibling_url(events_url_of(self.base_url, stream), "/cancel")

    def _follow_state(self, stream: StreamRef, transcript: Transcript | None) -> FollowState:
        return FollowState(events_url_of(self.base_url, stream), transcript or Transcript(),
                           self.retry, self._headers)
