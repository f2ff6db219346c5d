"""The generation loop, with fakes behind its two protocols (no Redis, no HTTP)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tokenwire.buffers import make_buffer
from tokenwire.jobs import Job
from tokenwire.worker.generation import Generation
from tokenwire.worker.providers import Delta, UpstreamError
from tokenwire.worker.providers.simulated import SimulatedProvider, simulated_tokens


def job(**overrides: Any) -> Job:
    values: dict[str, Any] = {"stream_id": "s" * 22, "messages": [{"role": "user", "content": "q"}],
                              "model": "m", "buffer": "none", "created_at_ms": 0}
    values.update(overrides)
    return Job(**values)


class ListSink:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.tokens: list[tuple[str, int]] = []
        self.terminal: tuple[str, dict[str, Any]] | None = None
        self._cancel_after = cancel_after

    async def token(self, content: str, count: int) -> bool:
        self.tokens.append((content, count))
        return self._cancel_after is not None and len(self.tokens) >= self._cancel_after

    async def done(self, data: dict[str, Any]) -> None:
        self.terminal = ("done", data)

    async def error(self, code: str, message: str, retryable: bool) -> None:
        self.terminal = ("error", {"code": code, "message": message, "retryable": retryable})

    @property
    def text(self) -> str:
        return "".join(content for content, _ in self.tokens)


class ScriptedProvider:
    name = "scripted"

    def __init__(self, script: list[Delta | float | Exception]) -> None:
        self.script = script
        self.closed = asyncio.Event()

    async def stream(self, job: Job) -> AsyncIterator[Delta]:
        try:
            for step in self.script:
                if isinstance(step, float):
                    await asyncio.sleep(step)
                elif isinstance(step, Exception):
                    raise step
                else:
                    yield step
        finally:
            self.closed.set()

    async def aclose(self) -> None:
        return None


async def test_done_reports_tokens_and_the_hash_of_exactly_the_text() -> None:
    pieces = ["Hel", "lo", " \r\n", "wörld", " 🚀", "\x00", "e\u0301"]
    provider = ScriptedProvider([Delta(text=p) for p in pieces]
                                + [Delta(finish_reason="stop", usage={"total_tokens": 9})])
    sink = ListSink()
    await Generation(job(buffer="word"), provider, make_buffer("word", 10, 64), sink).run()
    assert sink.text == "".join(pieces)
    assert sink.terminal is not None
    kind, data = sink.terminal
    assert kind == "done"
    assert data["finish_reason"] == "stop"
    assert data["tokens"] == len(pieces) == sum(count for _, count in sink.tokens)
    assert data["sha256"] == hashlib.sha256("".join(pieces).encode()).hexdigest()
    assert data["usage"] == {"total_tokens": 9}
    assert data["tokens_per_second"] > 0


async def test_buffer_deadline_flushes_while_the_model_is_silent() -> None:
    provider = ScriptedProvider([Delta(text="held"), 0.5, Delta(text=" more"),
                                 Delta(finish_reason="stop")])
    sink = ListSink()
    generation = Generation(job(), provider, make_buffer("coalesce", 0.05, 1000), sink)
    task = asyncio.create_task(generation.run())
    await asyncio.sleep(0.3)
    assert sink.tokens == [("held", 1)], "text must not wait for the next token"
    await task
    assert sink.text == "held more"


async def test_stream_without_finish_reason_is_an_error_not_done() -> None:
    provider = ScriptedProvider([Delta(text="partial"),
                                 UpstreamError("upstream_incomplete", "cut off", True)])
    sink = ListSink()
    await Generation(job(), provider, make_buffer("none", 1, 1), sink).run()
    assert sink.text == "partial"
    assert sink.terminal == ("error", {"code": "upstream_incomplete", "message": "cut off",
                                       "retryable": True})


async def test_unexpected_provider_failure_still_ends_the_stream() -> None:
    provider = ScriptedProvider([Delta(text="x"), RuntimeError("boom")])
    sink = ListSink()
    await Generation(job(), provider, make_buffer("none", 1, 1), sink).run()
    assert sink.terminal is not None and sink.terminal[0] == "error"
    assert sink.terminal[1]["code"] == "upstream_failed"


async def test_cancel_closes_the_upstream_and_ends_with_cancelled() -> None:
    provider = ScriptedProvider([Delta(text="a"), 30.0, Delta(text="never")])
    sink = ListSink()
    generation = Generation(job(), provider, make_buffer("none", 1, 1), sink)
    task = asyncio.create_task(generation.run())
    await asyncio.sleep(0.05)
    generation.cancel()
    await asyncio.wait_for(task, 2)
    assert provider.closed.is_set()
    assert sink.text == "a"
    assert sink.terminal is not None
    assert sink.terminal[1]["finish_reason"] == "cancelled"
    assert sink.terminal[1]["tokens"] == 1
    assert sink.terminal[1]["cancel_latency_ms"] < 1000


async def test_a_cancel_seen_by_the_sink_stops_generation() -> None:
    provider = ScriptedProvider([Delta(text=str(i)) for i in range(100)]
                                + [Delta(finish_reason="stop")])
    sink = ListSink(cancel_after=3)
    await Generation(job(), provider, make_buffer("none", 1, 1), sink).run()
    assert sink.terminal is not None
    assert sink.terminal[1]["finish_reason"] == "cancelled"
    assert len(sink.tokens) < 100


async def test_simulated_provider_is_deterministic_and_respects_max_tokens() -> None:
    provider = SimulatedProvider(tokens_per_second=5000, first_token_delay=0)
    sink = ListSink()
    await Generation(job(max_tokens=10), provider, make_buffer("none", 1, 1), sink).run()
    assert sink.text == "".join(simulated_tokens("q", 120)[:10])
    assert sink.terminal is not None and sink.terminal[1]["finish_reason"] == "length"


@pytest.mark.parametrize("prompt", ["a", "b"])
def test_simulated_text_contains_what_naive_buffers_lose(prompt: str) -> None:
    text = "".join(simulated_tokens(prompt * 50, 400))
    assert "\n\n" in text and "  " in text
