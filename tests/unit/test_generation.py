"""The generation loop, with fakes behind its two protocols (no Redis, no HTTP)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from tokenwire.buffers import make_buffer
from tokenwire.jobs import Job
from tokenwire.settings import BufferMode
from tokenwire.worker.generation import Ending, Generation, UpstreamPolicy
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

    def __init__(self, *scripts: Sequence[Delta | float | Exception]) -> None:
        """One script per call; the last one repeats."""
        self.scripts = scripts
        self.prefixes: list[str] = []
        self.closed = asyncio.Event()

    async def stream(self, job: Job, prefix: str = "") -> AsyncIterator[Delta]:
        self.prefixes.append(prefix)
        script = self.scripts[min(len(self.prefixes), len(self.scripts)) - 1]
        try:
            for step in script:
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


async def test_stream_cut_after_text_is_never_done_but_a_new_attempt() -> None:
    provider = ScriptedProvider([Delta(text="partial"),
                                 UpstreamError("upstream_incomplete", "cut off", True)])
    sink = ListSink()
    policy = UpstreamPolicy(retries=3, backoff=0.01)
    ending = await Generation(job(), provider, make_buffer("none", 1, 1), sink, policy).run()
    assert ending == Ending("restart", "upstream_incomplete", "cut off")
    assert sink.text == "partial" and sink.terminal is None
    assert len(provider.prefixes) == 1, "text was sent: no silent retry in the same epoch"


async def test_failures_before_the_first_token_are_retried_invisibly() -> None:
    busy = UpstreamError("upstream_429", "slow down", True, retry_after=0.2)
    provider = ScriptedProvider([busy], [Delta(text="held"), busy],
                                [Delta(text="fine"), Delta(finish_reason="stop")])
    sink = ListSink()
    policy = UpstreamPolicy(retries=3, backoff=5.0)  # Retry-After (0.2 s) must win
    started = asyncio.get_running_loop().time()
    ending = await Generation(job(), provider, make_buffer("coalesce", 10, 1000), sink,
                              policy).run()
    assert ending.kind == "done"
    assert sink.text == "fine", "text buffered by a failed call is never sent"
    assert sink.terminal is not None and sink.terminal[1]["tokens"] == 1
    assert 0.4 <= asyncio.get_running_loop().time() - started < 3


async def test_retries_used_up_before_any_text_ask_for_a_new_attempt() -> None:
    provider = ScriptedProvider([UpstreamError("upstream_503", "down", True, retry_after=0)])
    sink = ListSink()
    ending = await Generation(job(), provider, make_buffer("none", 1, 1), sink,
                              UpstreamPolicy(retries=2)).run()
    assert ending.kind == "restart" and len(provider.prefixes) == 3
    assert sink.tokens == [] and sink.terminal is None


async def test_a_silent_model_ends_with_upstream_timeout() -> None:
    provider = ScriptedProvider([Delta(text="a"), 30.0, Delta(text="never")])
    sink = ListSink()
    ending = await Generation(job(), provider, make_buffer("none", 1, 1), sink,
                              UpstreamPolicy(max_gap=0.3)).run()
    assert ending.kind == "error" and provider.closed.is_set()
    assert sink.terminal is not None and sink.terminal[1]["code"] == "upstream_timeout"
    assert sink.text == "a"


async def test_a_slow_drip_hits_the_overall_deadline() -> None:
    drip: list[Delta | float | Exception] = [Delta(text="."), 0.1] * 100
    provider = ScriptedProvider(drip)
    sink = ListSink()
    ending = await Generation(job(), provider, make_buffer("none", 1, 1), sink,
                              UpstreamPolicy(deadline=0.5, max_gap=5)).run()
    assert ending == Ending("error", "upstream_timeout", "the model exceeded its deadline")
    assert 2 <= len(sink.text) <= 8


async def test_a_continued_attempt_hashes_and_counts_the_whole_text() -> None:
    provider = ScriptedProvider([Delta(text=" world"), Delta(finish_reason="stop")])
    sink = ListSink()
    await Generation(job(), provider, make_buffer("none", 1, 1), sink,
                     prefix="hello", prior_tokens=4).run()
    assert provider.prefixes == ["hello"]
    assert sink.terminal is not None
    assert sink.terminal[1]["sha256"] == hashlib.sha256(b"hello world").hexdigest()
    assert sink.terminal[1]["tokens"] == 5


async def test_simulated_provider_continues_after_a_prefix() -> None:
    provider = SimulatedProvider(tokens_per_second=5000, first_token_delay=0)
    full = "".join(simulated_tokens("q", 120))
    for cut in (0, 1, 7, len(full) - 1):
        sink = ListSink()
        await Generation(job(), provider, make_buffer("none", 1, 1), sink,
                         prefix=full[:cut]).run()
        assert full[:cut] + sink.text == full


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


@pytest.mark.parametrize("buffer", ["none", "word", "coalesce"])
async def test_lone_surrogates_become_replacement_characters_and_the_job_ends(
        buffer: BufferMode) -> None:
    """Half of a pair split across two chunks is joined; a truly lone one is U+FFFD.
    The job ends with ``done`` (it used to crash, be retried and be billed again),
    and ``done.sha256`` is the hash of exactly what clients assemble."""
    pieces = ["a\ud800b", " x\ud83d", "\ude80 y", " \udc00", " end\udbff"]
    provider = ScriptedProvider([*(Delta(text=p) for p in pieces), Delta(finish_reason="stop")])
    sink = ListSink()
    ending = await Generation(job(buffer=buffer), provider, make_buffer(buffer, 10, 64),
                              sink).run()
    assert ending.kind == "done"
    assert sink.text == "a\ufffdb x🚀 y \ufffd end\ufffd"
    assert sink.terminal is not None
    assert sink.terminal[1]["sha256"] == hashlib.sha256(sink.text.encode()).hexdigest()
    assert sink.terminal[1]["tokens"] == len(pieces)


async def test_an_upstream_failure_reaches_clients_as_a_fixed_message() -> None:
    """An exception nobody mapped ends the stream with our text, not the exception's."""
    leaky = RuntimeError("connect to https://admin:hunter22@10.0.0.7/v1 failed, key sk-live1234567")
    provider = ScriptedProvider([Delta(text="a"), leaky])
    sink = ListSink()
    ending = await Generation(job(), provider, make_buffer("none", 1, 1), sink).run()
    assert ending.kind == "error" and sink.terminal is not None
    assert sink.terminal[1] == {"code": "upstream_failed", "message": "the model call failed",
                                "retryable": False}


async def test_a_stalled_sink_stops_the_model_being_read_ahead_without_bound() -> None:
    """Redis unreachable: the sink's write waits (it retries until Redis
    answers). The model is read only a bounded number of deltas ahead, then
    held back; when the write goes through, nothing was lost."""
    from tokenwire.worker.generation import READ_AHEAD

    read = 0
    unblock = asyncio.Event()

    class CountingProvider(ScriptedProvider):
        async def stream(self, job: Job, prefix: str = "") -> AsyncIterator[Delta]:
            nonlocal read
            for index in range(READ_AHEAD * 4):
                read += 1
                yield Delta(text=f"{index} ")
            yield Delta(finish_reason="stop")

    class StalledSink(ListSink):
        async def token(self, content: str, count: int) -> bool:
            await unblock.wait()
            return await super().token(content, count)

    sink = StalledSink()
    generation = asyncio.create_task(
        Generation(job(), CountingProvider(), make_buffer("none", 10, 64), sink).run())
    async with asyncio.timeout(5):  # the reader runs until it is held back
        while True:
            before = read
            await asyncio.sleep(0.05)
            if read == before and read > 0:
                break
    assert read <= READ_AHEAD + 2, read
    unblock.set()
    assert (await generation).kind == "done"
    assert sink.text == "".join(f"{index} " for index in range(READ_AHEAD * 4))
