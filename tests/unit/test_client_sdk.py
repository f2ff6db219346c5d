"""The client SDK against a scripted SSE server: a ``slow_consumer`` notice (an
``error`` without an id) is a dropped connection to resume, not the end; and its
SSE parsing of the current framing and the next."""

from __future__ import annotations

import hashlib
import json

from aiohttp import web
from aiohttp.test_utils import TestServer

from tokenwire.client import AsyncTokenwireClient, LineSplitter, RetryPolicy, Transcript
from tokenwire.client.protocol import FollowState

STREAM = "s" * 22
TOKENS = ["Hel", "lo, ", "wor", "ld"]


def _message(event_id: str | None, event_type: str, data: dict[str, object]) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event_type}\ndata: {json.dumps(data)}\n\n"


def _events() -> list[tuple[str, str, dict[str, object]]]:
    events: list[tuple[str, str, dict[str, object]]] = [("e.1", "start", {})]
    events += [(f"e.{i + 2}", "token", {"content": t}) for i, t in enumerate(TOKENS)]
    text = "".join(TOKENS)
    events.append((f"e.{len(TOKENS) + 2}", "done", {
        "finish_reason": "stop", "sha256": hashlib.sha256(text.encode()).hexdigest()}))
    return events


async def test_follow_resumes_after_a_slow_consumer_notice() -> None:
    resumed_from: list[str | None] = []

    async def events(request: web.Request) -> web.StreamResponse:
        cursor = request.headers.get("Last-Event-ID")
        resumed_from.append(cursor)
        after = int(cursor.split(".")[1]) if cursor else 0
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event_id, event_type, data in _events()[after:]:
            await response.write(_message(event_id, event_type, data).encode())
            if cursor is None and event_id == "e.3":  # first connection: falls behind
                notice = {"code": "slow_consumer", "retryable": True, "message": "behind"}
                await response.write(_message(None, "error", notice).encode())
                return response
        return response

    app = web.Application()
    app.router.add_get(f"/v1/streams/{STREAM}/events", events)
    async with TestServer(app) as server, AsyncTokenwireClient(str(server.make_url(""))) as client:
        transcript = await client.follow(STREAM)
    assert resumed_from == [None, "e.3"]
    assert transcript.text == "".join(TOKENS)
    assert transcript.terminal is not None and transcript.terminal.type == "done"
    assert [e.type for e in transcript.events].count("error") == 0


def frames_to_events(wire: str) -> tuple[list[tuple[str, str]], str]:
    """Feed ``wire`` to a follow, in awkward chunks; the events and text it keeps."""
    state = FollowState("http://edge/v1/streams/x/events", Transcript(), RetryPolicy(), {})
    splitter, seen = LineSplitter(), []
    for start in range(0, len(wire), 7):  # chunks that split lines, CRLFs and characters
        for line in splitter.feed(wire[start:start + 7]):
            event = state.on_line(line)
            if event is not None:
                seen.append((event.id, event.type))
    return seen, state.transcript.text


def test_the_parser_reads_todays_framing_and_the_next_one() -> None:
    """Today: a ``retry:``-only block first, ``: ping`` comments, an id-less
    ``error`` notice. Next (#10): ``retry:`` inside the first event's block, a typed
    ``ping`` event, a non-terminal notice event. Both assemble the same text, with
    CRLF or LF, and a U+2028 in model text does not end a line."""
    text = "a\u2028b\u0085 c"
    done = {"finish_reason": "stop", "sha256": hashlib.sha256(text.encode()).hexdigest()}
    today = ("retry: 1500\r\n\r\n"
             'id: e.1\r\nevent: start\r\ndata: {}\r\n\r\n: ping\r\n\r\n'
             f"id: e.2\r\nevent: token\r\ndata: {json.dumps({'content': text}, ensure_ascii=False)}"
             "\r\n\r\n"
             'event: error\r\ndata: {"code": "slow_consumer", "retryable": true}\r\n\r\n'
             f"id: e.3\r\nevent: done\r\ndata: {json.dumps(done)}\r\n\r\n")
    following = ('retry: 1500\nid: e.1\nevent: start\ndata: {}\n\n'
                 'event: ping\ndata: {"t": 1}\n\n'
                 f"id: e.2\nevent: token\ndata: {json.dumps({'content': text}, ensure_ascii=False)}"
                 "\n\n"
                 'event: notice\ndata: {"code": "slow_consumer"}\n\n'
                 f"id: e.3\nevent: done\ndata: {json.dumps(done)}\n\n")
    for wire in (today, following):
        events, assembled = frames_to_events(wire)
        assert events == [("e.1", "start"), ("e.2", "token"), ("e.3", "done")]
        assert assembled == text
