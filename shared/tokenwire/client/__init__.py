"""The Python client of the edge API: create streams, follow them to the end
through drops and edge restarts, cancel them. Blocking (``TokenwireClient``) or
asyncio (``AsyncTokenwireClient``), with the same methods::

    from tokenwire.client import TokenwireClient

    with TokenwireClient("http://127.0.0.1:8080", api_key=KEY) as client:
        created = client.create({"prompt": "Explain resumable streams"})
        for event in client.iter_events(created, transcript := Transcript()):
            ...  # transcript.text is the text so far, resets and snapshots applied
        print(transcript.text)

It needs only the standard library and ``httpx2`` (``pip install
'tokenwire[client]'``): none of the server's packages. A follow resumes with
``Last-Event-ID`` after any drop (exactly: no gap, no duplicate — the
``Transcript`` checks), retries connection errors and 429/5xx answers with a
jittered, capped backoff that honours ``Retry-After``, and takes 204 as "you have
it all". Errors::

    ClientError
    ├── HTTPStatusError    an answer retrying cannot change: 401/403 credentials,
    │                      404 no such stream (or not yours), 410 expired, 400/422 input
    └── GaveUp             the edge stayed away or busy through every retry
    ProtocolViolation      the server broke the event contract (an AssertionError)

A stream can be named by its id, by the ``events_url`` a backend handed over
(tokenized: it needs no API key), or by the ``CreatedStream`` from ``create``.
"""

from tokenwire.client.aio import AsyncTokenwireClient
from tokenwire.client.protocol import (
    ClientError,
    CreatedStream,
    GaveUp,
    HTTPStatusError,
    RetryPolicy,
    StreamRef,
    TokenwireError,
)
from tokenwire.client.sse import LineSplitter, SseMessage, SseParser, parse_sse
from tokenwire.client.sync import TokenwireClient
from tokenwire.client.transcript import ClientEvent, ProtocolViolation, Transcript

__all__ = [
    "AsyncTokenwireClient",
    "ClientError",
    "ClientEvent",
    "CreatedStream",
    "GaveUp",
    "HTTPStatusError",
    "LineSplitter",
    "ProtocolViolation",
    "RetryPolicy",
    "SseMessage",
    "SseParser",
    "StreamRef",
    "TokenwireClient",
    "TokenwireError",
    "Transcript",
    "parse_sse",
]
