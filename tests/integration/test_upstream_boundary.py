"""What crosses the boundary with the LLM provider, through the real ``openai``
SDK, a real worker and a real Valkey: a provider's error text never reaches
clients (it can quote our key), and a lone surrogate in model output is
repaired instead of crashing the job."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.support import fake_openai
from tests.support.streams import new_job
from tokenwire.store import StreamStore
from tokenwire.worker.providers import OpenAIProvider
from tokenwire.worker.worker import Worker

API_KEY = "sk-proj-TESTKEY0123456789abcdefSECRET"


@pytest.fixture
async def llm_url() -> AsyncIterator[str]:
    async with TestServer(fake_openai.create_app()) as server:
        yield str(server.make_url("/v1"))


async def run_one_job(redis: Redis, redis_url: str, llm_url: str, prompt: str) -> StreamStore:
    settings = make_settings(redis_url, provider="openai", openai_api_key=API_KEY,
                             openai_base_url=llm_url, upstream_retries=0, max_attempts=3)
    store = StreamStore(redis, settings)
    job = new_job(prompt, stream_id="S" * 22)
    await store.create(job, None, "fp")
    provider = OpenAIProvider(settings)
    try:
        await asyncio.wait_for(Worker(redis, settings, provider, burst=True).run(), 20)
    finally:
        await provider.aclose()
    return store


async def test_an_upstream_error_reaches_clients_as_a_fixed_message(
        redis: Redis, redis_url: str, llm_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    store = await run_one_job(redis, redis_url, llm_url, "#status=401 #leak hello")
    snap = await store.snapshot("S" * 22)
    assert snap is not None and snap.meta.status == "error"
    assert snap.meta.final == {"code": "upstream_401", "retryable": False,
                               "message": "the model server refused our credentials"}
    events = await redis.xrange("tw:{" + "S" * 22 + "}:events")
    assert events and all(API_KEY not in str(fields) for _, fields in events)
    # the provider's own account goes to the log, without the secrets it quoted
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Incorrect API key provided" in logged
    assert API_KEY not in logged and "hunter22" not in logged


async def test_a_lone_surrogate_is_repaired_and_the_job_ends_at_the_first_attempt(
        redis: Redis, redis_url: str, llm_url: str) -> None:
    store = await run_one_job(redis, redis_url, llm_url, "#surrogate hello")
    snap = await store.snapshot("S" * 22)
    assert snap is not None and snap.meta.status == "done", snap
    assert snap.meta.attempt == 1  # no crash, no retry, billed once
    assert snap.text == fake_openai.SURROGATE_TEXT
    assert snap.meta.final is not None
    assert snap.meta.final["sha256"] == hashlib.sha256(snap.text.encode()).hexdigest()
