"""A scripted gateway (a load balancer as clients meet it) in front of real edges.

Requests go round-robin to the upstream edges and are proxied as they are,
SSE streamed chunk by chunk. A script decides what the next requests to an
``/events`` URL meet instead: ``Status(503, retry_after=1)`` — what a proxy or
a busy edge answers; ``Cut(after_events=5)`` — the connection dies mid-stream.
Every request is recorded (upstream, path, query, ``Last-Event-ID``, time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web


@dataclass(frozen=True)
class Status:
    status: int
    retry_after: float | None = None


@dataclass(frozen=True)
class Cut:
    after_events: int


@dataclass(frozen=True)
class Seen:
    upstream: str | None
    method: str
    path: str
    query: str
    last_event_id: str | None
    at: float
    status: int


@dataclass
class Gateway:
    upstreams: list[str]
    script: list[Status | Cut] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    _next: int = 0

    def events_requests(self) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith("/events")]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        step = self.script.pop(0) if self.script and request.path.endswith("/events") else None
        if isinstance(step, Status):
            self._record(request, None, step.status)
            headers = {"Retry-After": str(step.retry_after)} if step.retry_after else {}
            return web.json_response({"error": {"code": "gateway", "message": "scripted"}},
                                     status=step.status, headers=headers)
        upstream = self.upstreams[self._next % len(self.upstreams)]
        self._next += 1
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        async with aiohttp.ClientSession() as session, session.request(
                request.method, upstream + request.path_qs, headers=headers,
                data=await request.read(), allow_redirects=False) as answer:
            self._record(request, upstream, answer.status)
            if answer.content_type != "text/event-stream":
                return web.Response(status=answer.status, body=await answer.read(),
                                    headers={"Content-Type": answer.headers.get(
                                        "Content-Type", "application/octet-stream")})
            response = web.StreamResponse(status=answer.status,
                                          headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            events = 0
            async for line in answer.content:
                await response.write(line)
                events += line.startswith(b"id:")
                if isinstance(step, Cut) and events >= step.after_events and line.strip() == b"":
                    assert request.transport is not None
                    request.transport.close()  # the connection dies mid-stream
                    break
            return response

    def _record(self, request: web.Request, upstream: str | None, status: int) -> None:
        self.seen.append(Seen(upstream, request.method, request.path, request.query_string,
                              request.headers.get("Last-Event-ID"), time.monotonic(), status))
