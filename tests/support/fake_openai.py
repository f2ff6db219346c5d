"""A small OpenAI-compatible server speaking the real chat-completion chunk format.

The real ``openai`` SDK talks to it over HTTP, so the provider's real code path
runs. What it generates is a pure function of the prompt (``completion_for``),
so a test knows the model's exact output. The last user message may script
behaviour with a leading directive:

- ``#truncate``  end the stream without a finish reason
- ``#slow``      60 ms between chunks (room to drop and resume mid-stream)
- ``#status=N``  answer HTTP N before streaming

Run standalone for end-to-end tests: ``python -m tests.support.fake_openai --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import time

from aiohttp import web

# Tokens a naive pipeline gets wrong: whitespace runs, CR/LF, NUL, emoji (astral),
# combining marks, things that look like SSE fields or JSON.
_TRICKY = [" ", "  ", "\n", "\r\n", "\r", "\t", "\x00", "🚀", "👩‍💻", "e\u0301", "\u0301",
           "\ndata: forged\n\n", "id: 9.9", '{"a":1}', "\u2028", "日本語", "ß", "."]
_WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


def completion_for(prompt: str, count: int = 60) -> list[str]:
    """The chunks the fake model streams for ``prompt``."""
    rng = random.Random(hashlib.sha256(prompt.encode()).digest())
    chunks = []
    for _ in range(count):
        pool = _TRICKY if rng.random() < 0.35 else _WORDS
        chunks.append(rng.choice(pool) + (" " if rng.random() < 0.5 else ""))
    return chunks


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
    prompt = body["messages"][-1]["content"]
    if prompt.startswith("#status="):
        status = int(prompt.split()[0].split("=")[1])
        return web.json_response({"error": {"message": "scripted", "type": "x"}}, status=status)
    max_tokens = body.get("max_tokens")
    chunks = completion_for(prompt)
    finish = "stop"
    if max_tokens is not None and max_tokens < len(chunks):
        chunks, finish = chunks[:max_tokens], "length"
    delay = 0.06 if prompt.startswith("#slow") else 0.002
    completion_id = "chatcmpl-" + hashlib.sha1(prompt.encode()).hexdigest()[:12]
    model = body.get("model", "fake")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_chunk(completion_id, model, "", None))  # role-only first chunk
    for content in chunks:
        await asyncio.sleep(delay)
        await response.write(_chunk(completion_id, model, content, None))
    if prompt.startswith("#truncate"):
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
    return response


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    web.run_app(create_app(), host="127.0.0.1", port=parser.parse_args().port, print=None)
