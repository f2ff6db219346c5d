"""Tokenwire's error tree. Catch what you can handle::

    TokenwireError                 code + message, safe to show a client
    ├── MalformedRequest           400 unparseable input, a bad cursor
    ├── Unauthorized               401 no credentials, or a bad/expired/revoked key or token
    ├── Forbidden                  403 credentials that may not do this (scope, origin)
    ├── StreamNotFound             404 (also: another tenant's stream)
    ├── ConversationNotFound       404 (also: another tenant's conversation)
    ├── NotFound                   404 anything else (a model), with its own code
    ├── KeyNotFound                404 an API key id the admin API does not know
    ├── RequestTimeout             408 the request's body did not arrive in time
    ├── Conflict                   409 the resource is busy (a conversation's turn is running)
    ├── StreamGone                 410 the stream's record expired
    ├── PayloadTooLarge            413
    ├── UnsupportedMediaType       415
    ├── InvalidValue               422 well-formed input with invalid values
    ├── OverLimit                  429 (retry_after)
    ├── Unavailable                503 Redis down or draining (retry_after)
    └── WriteRejected              a stream write the append script refused
        ├── FencedWrite            another attempt owns the stream now
        ├── SequenceConflict       seq is not last_seq + 1
        ├── StreamNotRunning       the stream already ended (e.g. cancelled)
        └── StreamLost             Redis no longer has what this attempt wrote
    OutOfCapacity                  Redis is out of memory: a token write was refused

The edge maps the HTTP ones to status codes in one table (``tokenwire.edge.errors``).
"""

from __future__ import annotations


class TokenwireError(Exception):
    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class MalformedRequest(TokenwireError):
    pass


class Unauthorized(TokenwireError):
    """Never says more than needed: no hint whether a key id exists."""


class Forbidden(TokenwireError):
    pass


class StreamNotFound(TokenwireError):
    def __init__(self) -> None:
        super().__init__("not_found", "no stream with this id")


class KeyNotFound(TokenwireError):
    def __init__(self) -> None:
        super().__init__("not_found", "no API key with this id")


class ConversationNotFound(TokenwireError):
    def __init__(self) -> None:
        super().__init__("not_found", "no conversation with this id")


class NotFound(TokenwireError):
    pass


class RequestTimeout(TokenwireError):
    pass


class Conflict(TokenwireError):
    pass


class StreamGone(TokenwireError):
    def __init__(self) -> None:
        super().__init__("gone", "this stream's record has expired")


class PayloadTooLarge(TokenwireError):
    pass


class UnsupportedMediaType(TokenwireError):
    pass


class InvalidValue(TokenwireError):
    def __init__(self, code: str, message: str, details: list[dict[str, object]] | None = None):
        super().__init__(code, message)
        self.details = details or []


class OverLimit(TokenwireError):
    pass


class Unavailable(TokenwireError):
    pass


class WriteRejected(TokenwireError):
    pass


class FencedWrite(WriteRejected):
    def __init__(self, stream_id: str) -> None:
        super().__init__("fenced", f"stream {stream_id} belongs to a newer attempt")


class SequenceConflict(WriteRejected):
    def __init__(self, stream_id: str, expected: int, got: int) -> None:
        super().__init__("seq_conflict", f"stream {stream_id}: expected seq {expected}, got {got}")


class StreamNotRunning(WriteRejected):
    def __init__(self, stream_id: str, status: str) -> None:
        super().__init__("not_running", f"stream {stream_id} is {status}")
        self.status = status


class StreamLost(WriteRejected):
    """The stream's record is gone (Redis restarted empty) or behind this attempt
    (Redis lost its last writes): the attempt must begin again."""

    def __init__(self, stream_id: str, detail: str) -> None:
        super().__init__("stream_lost", f"stream {stream_id}: {detail}")


class OutOfCapacity(TokenwireError):
    def __init__(self) -> None:
        super().__init__("capacity", "the server ran out of memory for this stream")
