"""A small OpenAI-compatible server speaking the real chat-completion chunk format.

The real ``openai`` SDK talks to it over HTTP, so the provider's real code path
runs. What it generates is a pure function of the prompt (``completion_for``),
so a test knows the model's exact output. The last user message may script
behaviour with leading directives (several may be combined):

- ``#truncate``       end every stream without a finish reason
- ``#slow``           60 ms between chunks (room to drop and resume mid-stream)
- ``#delay=MS``       MS between chunks
- ``#first=MS``       MS before the first chunk
- ``#status=N``       always answer HTTP N before streaming
- ``#fail=K:N``       the first K requests for this prompt answer HTTP N…
- ``#retry_after=S``  …with a ``Retry-After: S`` header
- ``#cut=K:C``        the first K requests drop the connection after C chunks
- ``#stall=C``        go silent after C chunks, until the client hangs up
- ``#leak``           an error's message quotes the caller's API key and an internal
                      URL with credentials, as real providers' messages can
- ``#surrogate``      the completion carries a lone surrogate and an emoji whose
                      UTF-16 pair is split across two chunks (JSON ``\\ud83d`` escapes)

A continuation request (a trailing assistant message and
``continue_final_message``, the vLLM convention) streams what follows that
message in the same completion. ``GET /stats`` reports, per prompt, the
requests, the streams completed, the streams the client closed early and the
last request's ``traceparent``.

Run standalone for end-to-end tests: ``python -m tests.support.fake_openai --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import time
from dataclasses import dataclass

from aiohttp import web

# Tokens a naive pipeline gets wrong: whitespace runs, CR/LF, NUL, emoji (astral),
# combining marks, things that look like SSE fields or JSON.
_TRICKY = [" ", "  ", "\n", "\r\n", "\r", "\t", "\x00", "🚀", "👩‍💻", "e\u0301", "\u0301",
           "\ndata: forged\n\n", "id: 9.9", '{"a":1}', "\u2028", "日本語", "ß", "."]
_WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


#: ``#surrogate``: what the chunks decode to on the client side (lone halves included).
SURROGATE_CHUNKS = ["lone ", "\ud800", " split ", "\ud83d", "\ude80", " end"]
#: …and the text that must reach clients: the pair joined, the lone half replaced.
SURROGATE_TEXT = "lone \ufffd split 🚀 end"


def completion_for(prompt: str, count: int = 60) -> list[str]:
    """The chunks the fake model streams for ``prompt``."""
    rng = random.Random(hashlib.sha256(prompt.encode()).digest())
    chunks = []
    for _ in range(count):
        pool = _TRICKY if rng.random() < 0.35 else _WORDS
        chunks.append(rng.choice(pool) + (" " if rng.random() < 0.5 else ""))
    return chunks


def directives(prompt: str) -> dict[str, str]:
    """``#name=value`` words at the start of ``prompt`` (value '' when absent)."""
    found: dict[str, str] = {}
    for word in prompt.split():
        if not word.startswith("#"):
            break
        name, _, value = word[1:].partition("=")
        found[name] = value
    return found


@dataclass
class PromptStats:
    requests: int = 0
    completed: int = 0
    closed_early: int = 0
    traceparent: str | None = None  # the last request's W3C trace header


STATS = web.AppKey("stats", dict)


def _chunk(completion_id: str, model: str, content: str | None, finish: str | None) -> bytes:
    delta = {} if content is None else {"content": content}
    body = {
        "id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    messages = body["messages"]
    continuing = bool(body.get("continue_final_message")) and messages[-1]["role"] == "assistant"
    prompt = messages[-2]["content"] if continuing else messages[-1]["content"]
    script = directives(prompt)
    stats = request.app[STATS].setdefault(prompt, PromptStats())
    stats.requests += 1
    stats.traceparent = request.headers.get("traceparent")
    leak = _leaky_message(request) if "leak" in script else None
    if "status" in script:
        return _http_error(int(script["status"]), None, leak)
    if "fail" in script:
        times, status = script["fail"].split(":")
        if stats.requests <= int(times):
            return _http_error(int(status), script.get("retry_after"), leak)
    chunks = SURROGATE_CHUNKS if "surrogate" in script else completion_for(prompt)
    finish = "stop"
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and max_tokens < len(chunks):
        chunks, finish = chunks[:max_tokens], "length"
    if continuing:
        chunks = _after(messages[-1]["content"], chunks)
    cut_after = len(chunks) + 1
    if "cut" in script:
        times, count = script["cut"].split(":")
        if stats.requests <= int(times):
            cut_after = int(count)
    stall_after = int(script["stall"]) if "stall" in script else len(chunks) + 1
    delay = 0.06 if "slow" in script else int(script.get("delay", "2")) / 1000
    completion_id = "chatcmpl-" + hashlib.sha1(prompt.encode()).hexdigest()[:12]
    model = body.get("model", "fake")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    try:
        await response.write(_chunk(completion_id, model, "", None))  # role-only first chunk
        await asyncio.sleep(int(script.get("first", "0")) / 1000)
        for index, content in enumerate(chunks):
            if index == cut_after:
                assert request.transport is not None
                request.transport.close()  # the connection drops mid-answer
                return response
            if index == stall_after:
                await _until_client_leaves(request)
                raise ConnectionResetError
            await asyncio.sleep(delay)
            await response.write(_chunk(completion_id, model, content, None))
        if "truncate" in script:
            return response  # the connection ends: no finish_reason, no [DONE]
        await response.write(_chunk(completion_id, model, None, finish))
        if body.get("stream_options", {}).get("include_usage"):
            usage = {"prompt_tokens": 5, "completion_tokens": len(chunks),
                     "total_tokens": 5 + len(chunks)}
            usage_chunk = {"id": completion_id, "object": "chat.completion.chunk",
                           "created": int(time.time()), "model": model, "choices": [],
                           "usage": usage}
            await response.write(f"data: {json.dumps(usage_chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        stats.completed += 1
    except (ConnectionResetError, asyncio.CancelledError):
        stats.closed_early += 1
        raise
    return response


async def _until_client_leaves(request: web.Request) -> None:
    """Stay silent. aiohttp does not cancel a handler whose client left, so poll."""
    while True:
        if request.transport is None or request.transport.is_closing():
            return
        await asyncio.sleep(0.05)


def _after(prefix: str, chunks: list[str]) -> list[str]:
    """What follows ``prefix`` in the completion, as one chunk."""
    text = "".join(chunks)
    if not text.startswith(prefix):
        raise web.HTTPBadRequest(text="a continuation must continue this model's text")
    return [text[len(prefix):]] if len(text) > len(prefix) else []


def _http_error(status: int, retry_after: str | None, message: str | None = None
                ) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after else {}
    return web.json_response({"error": {"message": message or "scripted", "type": "x"}},
                             status=status, headers=headers)


def _leaky_message(request: web.Request) -> str:
    key = request.headers.get("Authorization", "").removeprefix("Bearer ")
    return (f"Incorrect API key provided: {key}. Upstream https://svc:hunter22@llm.internal/v1"
            f" answered for Authorization: Bearer {key}")


async def stats_handler(request: web.Request) -> web.Response:
    return web.json_response({prompt: vars(stats)
                              for prompt, stats in request.app[STATS].items()})


def create_app() -> web.Application:
    app = web.Application()
    app[STATS] = {}
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/stats", stats_handler)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    web.run_app(create_app(), host="127.0.0.1", port=parser.parse_args().port, print=None)
