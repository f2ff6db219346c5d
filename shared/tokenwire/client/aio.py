"""The asyncio client (``AsyncTokenwireClient``), on ``httpx2.AsyncClient``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Self

import httpx2

from tokenwire.client.protocol import (
    DEFAULT_TIMEOUT,
    RETRYABLE_STATUSES,
    ClientBase,
    ClientError,
    CreatedStream,
    FollowState,
    GaveUp,
    RetryPolicy,
    StreamRef,
    error_of,
    events_url_of,
    retry_after_of,
    sibling_url,
    sse_headers,
    stream_event_of,
)
from tokenwire.client.sse import LineSplitter, SseParser
from tokenwire.client.transcript import ClientEvent, Transcript


class AsyncTokenwireClient(ClientBase):
    """Create, follow and cancel streams from asyncio code::

        async with AsyncTokenwireClient("http://127.0.0.1:8080", api_key=KEY) as client:
            created = await client.create({"prompt": "Hello"})
            transcript = await client.follow(created)
            print(transcript.text)

    ``api_key`` is sent as ``Authorization: Bearer``; a stream's tokenized
    ``events_url`` needs none. Pass ``http`` to share your own ``httpx2.AsyncClient``
    (it stays yours to close)."""

    def __init__(self, base_url: str, *, api_key: str | None = None,
                 retry: RetryPolicy | None = None, http: httpx2.AsyncClient | None = None,
                 timeout: httpx2.Timeout = DEFAULT_TIMEOUT) -> None:
        super().__init__(base_url, api_key, retry)
        self._http = http or httpx2.AsyncClient(timeout=timeout)
        self._owns_http = http is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def create(self, job: dict[str, Any], *, idempotency_key: str | None = None
                     ) -> CreatedStream:
        """``POST /v1/streams``. Retried on 429/503 and on connection errors: an
        ``Idempotency-Key`` (a fresh one unless you pass yours) makes a retry
        return the same stream instead of a second one."""
        url, headers = self._create_request(idempotency_key)
        body = await self._request("POST", url, json=job, headers=headers)
        return CreatedStream.from_answer(self.base_url, body)

    async def status(self, stream: StreamRef) -> dict[str, Any]:
        """``GET /v1/streams/{id}``: status, the text so far, its cursor."""
        return await self._request("GET", self._status_url(stream), headers=self._headers)

    async def cancel(self, stream: StreamRef) -> str:
        """Cancel (idempotent); returns the status the edge reports."""
        body = await self._request("POST", self._cancel_url(stream), headers=self._headers)
        return str(body["status"])

    async def events(self, stream: StreamRef, last_event_id: str | None = None
                     ) -> AsyncIterator[ClientEvent]:
        """One connection's events, no reconnect: ends at the terminal event, when
        the edge closes, or at once on 204. Other answers raise ``HTTPStatusError``."""
        headers = sse_headers(self._headers, last_event_id)
        url = events_url_of(self.base_url, stream)
        async with self._http.stream("GET", url, headers=headers) as response:
            if response.status_code == 204:
                return
            if response.status_code != 200:
                raise error_of(response.status_code, await response.aread())
            parser = SseParser()
            async for line in _lines(response):
                event = stream_event_of(parser.feed(line))
                if event is not None:
                    yield event

    async def iter_events(self, stream: StreamRef, transcript: Transcript | None = None
                          ) -> AsyncIterator[ClientEvent]:
        """Every event of the stream, each applied to ``transcript`` before it is
        yielded, across drops and edge restarts (resumed with ``Last-Event-ID``),
        until the terminal event. 204 settles the transcript from the status URL."""
        state = self._follow_state(stream, transcript)
        while not state.transcript.finished:
            try:
                async with self._http.stream("GET", state.events_url,
                                             headers=state.request_headers()) as response:
                    body = b"" if response.status_code in (200, 204) else await response.aread()
                    action = state.on_answer(response.status_code, response.headers, body)
                    if action == "finished":
                        await self._settle(state)
                        return
                    if action == "read":
                        async for line in _lines(response):
                            event = state.on_line(line)
                            if event is not None:
                                yield event
                                if state.transcript.finished:
                                    return
            except httpx2.TransportError as exc:
                state.on_transport_error(exc)
            await asyncio.sleep(state.next_delay())

    async def follow(self, stream: StreamRef, transcript: Transcript | None = None
                     ) -> Transcript:
        """Follow the stream to its end (see ``iter_events``); returns its transcript."""
        transcript = transcript or Transcript()
        async for _ in self.iter_events(stream, transcript):
            pass
        return transcript

    async def _settle(self, state: FollowState) -> None:
        # on failure the transcript stays as it was: everything the events said
        with contextlib.suppress(ClientError, httpx2.HTTPError):
            state.transcript.settle(await self._request(
                "GET", sibling_url(state.events_url, ""), headers=self._headers))

    async def _request(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        """One JSON request, retried on connection errors and retryable answers."""
        attempt, limit = 0, self.retry.max_attempts
        while True:
            retry_after = None
            try:
                response = await self._http.request(method, url, **kwargs)
                if response.status_code < 300:
                    body: dict[str, Any] = response.json()
                    return body
                if response.status_code not in RETRYABLE_STATUSES:
                    raise error_of(response.status_code, response.content)
                retry_after = retry_after_of(response.headers.get("Retry-After"))
                last: Exception = error_of(response.status_code, response.content)
            except httpx2.TransportError as exc:
                last = exc
            attempt += 1
            if limit is not None and attempt >= limit:
                raise GaveUp(f"{method} {url}: {last}") from last
            await asyncio.sleep(self.retry.delay(attempt - 1, retry_after))



async def _lines(response: httpx2.Response) -> AsyncIterator[str]:
    """The body's lines, split the SSE way (see ``LineSplitter``)."""
    splitter = LineSplitter()
    async for chunk in response.aiter_text():
        for line in splitter.feed(chunk):
            yield line
