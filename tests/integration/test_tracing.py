"""Traces through the queue, with OpenTelemetry's in-memory exporter: one trace
id from the backend's ``POST`` to the call to the model (and the model server
receives it), the worker's log line carries it, no span per token. With
tracing off, nothing of OpenTelemetry is even imported."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import BaseTestServer, TestServer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.integration.auth_support import ClientFactory
from tests.integration.edge_support import EdgeClient
from tests.support import fake_openai
from tests.support.processes import ROOT
from tokenwire.client import parse_sse
from tokenwire.edge.app import create_app
from tokenwire.logs import JsonFormatter
from tokenwire.otel import OtelTracing
from tokenwire.tracing import NO_TRACING, asked_for, from_environment
from tokenwire.worker.providers import OpenAIProvider
from tokenwire.worker.worker import Worker

PROMPT = "#delay=1 trace me through the queue"


@pytest.fixture
async def llm() -> AsyncIterator[BaseTestServer]:
    async with TestServer(fake_openai.create_app()) as server:
        yield server


async def test_one_trace_from_the_post_to_the_upstream_call(
    redis: Redis, redis_url: str, llm: BaseTestServer, aiohttp_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = OtelTracing(provider)
    settings = make_settings(redis_url, provider="openai", openai_api_key="sk-test",
                             openai_base_url=str(llm.make_url("/v1")), default_model="fake")
    caplog.handler.addFilter(tracing.log_filter())  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, "tokenwire.worker.worker")
    model = OpenAIProvider(settings, trace_headers=tracing.headers)
    worker = Worker(redis, settings, model, tracing=tracing)
    running = asyncio.create_task(worker.run())
    try:
        edge: EdgeClient = await aiohttp_client(create_app(settings, tracing=tracing))
        with provider.get_tracer("backend").start_as_current_span("backend handles a chat"
                                                                  ) as backend:
            headers = tracing.headers()  # what a traced backend sends: traceparent
        response = await edge.post("/v1/streams", json={"prompt": PROMPT}, headers=headers)
        assert response.status == 202
        created = await response.json()
        events = [e async for e in parse_sse((await edge.get(created["events_url"])).content)]
        assert events[-1][1] == "done"
        upstream = await (await edge.session.get(llm.make_url("/stats"))).json()
    finally:
        worker.stop()
        await asyncio.wait_for(running, 10)
        await model.aclose()
    trace_id = backend.get_span_context().trace_id
    spans = {span.name: span for span in exporter.get_finished_spans()}
    post, job = spans["POST /v1/streams"], spans["process tw:jobs"]
    attempt, call = spans["generate"], spans["chat fake"]
    assert {span.context.trace_id for span in (post, job, attempt, call)} == {trace_id}
    assert post.kind == trace.SpanKind.SERVER
    assert post.parent is not None and post.parent.span_id == backend.get_span_context().span_id
    assert job.kind == trace.SpanKind.CONSUMER and job.parent.span_id == post.context.span_id  # type: ignore[union-attr]
    assert attempt.parent.span_id == job.context.span_id  # type: ignore[union-attr]
    assert call.parent.span_id == attempt.context.span_id  # type: ignore[union-attr]
    assert call.kind == trace.SpanKind.CLIENT
    attributes = dict(call.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "fake"
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.usage.output_tokens"] == len(fake_openai.completion_for(PROMPT))
    assert dict(job.attributes or {})["tokenwire.stream_id"] == created["id"]
    # the model server got the trace too: it can join it (vLLM does)
    assert upstream[PROMPT]["traceparent"].split("-")[1] == format(trace_id, "032x")
    # no span per token: the one call to the model is one span
    assert [s.name for s in exporter.get_finished_spans()].count("chat fake") == 1
    finished = [r for r in caplog.records if r.getMessage().startswith("generation finished")]
    assert [getattr(r, "trace_id", None) for r in finished] == [format(trace_id, "032x")]
    line = json.loads(JsonFormatter().format(finished[0]))  # TOKENWIRE_LOG_FORMAT=json
    assert line["trace_id"] == format(trace_id, "032x") and line["outcome"] == "done"
    assert line["stream_id"] == created["id"]
    assert line["tokens"] == json.loads(events[-1][2])["tokens"]
    assert line["ttft_ms"] >= 0 and line["duration_ms"] >= line["ttft_ms"]


def test_tracing_is_off_unless_the_otel_variables_ask_for_it() -> None:
    assert not asked_for({})
    assert not asked_for({"OTEL_TRACES_EXPORTER": "none"})
    assert not asked_for({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                          "OTEL_SDK_DISABLED": "true"})
    assert asked_for({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert asked_for({"OTEL_TRACES_EXPORTER": "console"})
    assert from_environment({}, "tokenwire-edge") is NO_TRACING


def test_with_tracing_off_tokenwire_imports_nothing_of_opentelemetry() -> None:
    """Only ``tokenwire.otel`` imports OpenTelemetry, and only when tracing is
    asked for. (redis-py 8 imports parts of it by itself when it is installed:
    that is redis-py's, and costs nothing at run time.)"""
    code = ("import sys; import tokenwire.cli, tokenwire.edge.app, tokenwire.worker.worker;"
            " from tokenwire.tracing import from_environment; from_environment({}, 'x');"
            " print('tokenwire.otel' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"
    importers = sorted(str(path.relative_to(ROOT)) for folder in ("shared", "services")
                       for path in (ROOT / folder).rglob("*.py")
                       if "opentelemetry" in path.read_text())
    assert importers == ["shared/tokenwire/otel.py"]
