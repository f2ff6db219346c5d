"""The official ``openai`` SDK pointed at two edges (``base_url``), as a user would.

Chat Completions (streaming and not, usage, a failure mid-stream, a cancel,
unsupported parameters) and the Responses API in background mode, resumed
with ``responses.retrieve(stream=True, starting_after=n)`` on the other edge
after the connection was cut at several points: the text must be exactly the
stream's stored text, and no ``sequence_number`` may repeat.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from redis.asyncio import Redis

from tests.conftest import running_worker
from tests.integration.auth_support import bearer, edge_settings, new_key
from tests.integration.edge_support import EdgeClient
from tests.support.jobs import queued_jobs
from tokenwire.edge.app import create_app
from tokenwire.jobs import Job
from tokenwire.settings import Settings
from tokenwire.worker.providers import Delta, UpstreamError

__all__ = ["edge_settings"]  # a fixture, from auth_support
ClientFactory = Callable[..., Any]


@pytest.fixture
async def edges(redis: Redis, edge_settings: Settings, aiohttp_client: ClientFactory
                ) -> list[EdgeClient]:
    """Two edges (two apps, each with its own Redis connections and hub)."""
    return [await aiohttp_client(create_app(edge_settings)) for _ in range(2)]


@pytest.fixture
async def api_key(edges: list[EdgeClient]) -> str:
    return str((await new_key(edges[0]))["key"])


def sdk(edge: EdgeClient, api_key: str) -> AsyncOpenAI:
    """What a user writes: the SDK, the edge's base URL, the tenant's API key."""
    return AsyncOpenAI(base_url=str(edge.make_url("/v1")), api_key=api_key, max_retries=0)


@pytest.fixture
async def clients(edges: list[EdgeClient], api_key: str
                  ) -> AsyncIterator[list[AsyncOpenAI]]:
    """The SDK on each edge, closed at the end."""
    opened = [sdk(edge, api_key) for edge in edges]
    yield opened
    for client in opened:
        await client.close()


async def stored(edge: EdgeClient, api_key: str, stream_id: str) -> dict[str, Any]:
    response = await edge.get(f"/v1/streams/{stream_id}", headers=bearer(api_key))
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


@pytest.fixture
async def worker(redis: Redis, edge_settings: Settings) -> AsyncIterator[None]:
    async with running_worker(redis, edge_settings):
        yield


async def test_models(clients: list[AsyncOpenAI]) -> None:
    client = clients[0]
    models = await client.models.list()
    assert [model.id for model in models.data] == ["simulated"]
    assert (await client.models.retrieve("simulated")).owned_by == "tokenwire"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-9")


async def test_chat_completion_whole_and_streamed(edges: list[EdgeClient], api_key: str,
                                                  clients: list[AsyncOpenAI], worker: None
                                                  ) -> None:
    client = clients[0]
    raw = await client.chat.completions.with_raw_response.create(
        model="simulated", messages=[{"role": "user", "content": "hello"}], max_tokens=30)
    completion = raw.parse()
    stream_id = raw.headers["X-Stream-ID"]
    record = await stored(edges[1], api_key, stream_id)
    assert completion.choices[0].message.content == record["text"] != ""
    assert completion.choices[0].finish_reason == "length"
    assert completion.id == f"chatcmpl-{stream_id}"
    assert completion.usage is not None and completion.usage.completion_tokens == 30

    chunks = []
    async with client.chat.completions.with_streaming_response.create(
            model="simulated", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "system", "content": "be kind"},
                      {"role": "user", "content": [{"type": "text", "text": "hi again"}]}],
    ) as response:
        stream_id = response.headers["X-Stream-ID"]
        async for chunk in await response.parse():
            chunks.append(chunk)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-2].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == (await stored(edges[1], api_key, stream_id))["text"]
    assert chunks[-1].usage.completion_tokens == (await stored(edges[1], api_key, stream_id)
                                                  )["tokens"]


async def test_wire_framing(edges: list[EdgeClient], api_key: str, worker: None) -> None:
    """Only ``data:`` lines (and ping comments): no ``id:``, no ``retry:``."""
    response = await edges[0].post("/v1/chat/completions", headers=bearer(api_key), json={
        "model": "simulated", "stream": True, "max_tokens": 5,
        "messages": [{"role": "user", "content": "frame me"}]})
    body = (await response.read()).decode()
    lines = [line for line in body.splitlines() if line]
    assert all(line.startswith(("data: ", ":")) for line in lines), lines
    assert lines[-1] == "data: [DONE]"


class _FailsAfterText:
    name = "fails-after-text"

    def __init__(self, retryable: bool) -> None:
        self.retryable = retryable

    async def stream(self, job: Job, prefix: str = "") -> AsyncIterator[Delta]:
        yield Delta(text="some words ")
        raise UpstreamError("upstream_500", "the model server failed (HTTP 500)", self.retryable)

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize(("retryable", "code"), [(False, "upstream_500"),
                                                 (True, "stream_reset")])
async def test_a_failure_mid_stream_is_an_error(clients: list[AsyncOpenAI], redis: Redis,
                                                edge_settings: Settings, retryable: bool,
                                                code: str) -> None:
    """The generation's own error, or a restart after text was sent (which this
    protocol cannot express), reach the SDK as an ``APIError`` with its code."""
    client = clients[0]
    async with running_worker(redis, edge_settings, _FailsAfterText(retryable)):
        stream = await client.chat.completions.create(
            model="simulated", stream=True, messages=[{"role": "user", "content": "x"}])
        text = ""
        with pytest.raises(openai.APIError) as failure:
            async for chunk in stream:
                text += chunk.choices[0].delta.content or ""
    assert text == "some words "
    assert failure.value.code == code


async def test_a_cancel_ends_the_stream(edges: list[EdgeClient], api_key: str,
                                        clients: list[AsyncOpenAI], redis: Redis,
                                        edge_settings: Settings) -> None:
    slow = edge_settings.model_copy(update={"simulated_tokens_per_second": 20.0})
    client = clients[0]
    request = client.chat.completions.with_streaming_response.create(
        model="simulated", stream=True, messages=[{"role": "user", "content": "stop me"}])
    async with running_worker(redis, slow), request as response:
        stream_id = response.headers["X-Stream-ID"]
        text = ""
        with pytest.raises(openai.APIError) as failure:
            async for chunk in await response.parse():
                text += chunk.choices[0].delta.content or ""
                if len(text) > 10:  # a browser holding X-Stream-ID cancels it
                    cancelled = await edges[1].post(f"/v1/streams/{stream_id}/cancel",
                                                    headers=bearer(api_key))
                    assert cancelled.status == 202
    assert failure.value.code == "cancelled"
    assert text == (await stored(edges[1], api_key, stream_id))["text"]


@pytest.mark.parametrize(("params", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"top_p": 0.5}, "top_p"),
    ({"stop": ["x"]}, "stop"), ({"seed": 1}, "seed"),
    # only the neutral value itself, as JSON compares it (false is not 0; to Python it is)
    ({"logprobs": 0}, "logprobs"), ({"n": True}, "n"),
])
async def test_unsupported_parameters_are_refused(clients: list[AsyncOpenAI], redis: Redis,
                                                  params: dict[str, Any], param: str) -> None:
    client = clients[0]
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model="simulated", messages=[{"role": "user", "content": "x"}], **params)
    assert refused.value.code == "unsupported_parameter"
    assert refused.value.param == param and param in refused.value.message
    assert await queued_jobs(redis) == 0  # nothing was enqueued


async def test_errors_have_openai_shape(edges: list[EdgeClient], clients: list[AsyncOpenAI]
                                        ) -> None:
    async with sdk(edges[0], "twk_nope") as stranger:
        with pytest.raises(openai.AuthenticationError) as unauthorized:
            await stranger.models.list()
    assert unauthorized.value.code == "invalid_api_key"
    client = clients[0]
    with pytest.raises(openai.BadRequestError) as invalid:
        await client.chat.completions.create(
            model="simulated", messages=[{"role": "user", "content": "x"}], temperature=5)
    assert invalid.value.param == "temperature"
    body = invalid.value.body
    assert isinstance(body, dict) and set(body) >= {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as image:
        await client.chat.completions.create(model="simulated", messages=[{
            "role": "user", "content": [{"type": "image_url",
                                         "image_url": {"url": "http://x/y.png"}}]}])
    assert image.value.code == "unsupported_parameter"


@pytest.mark.parametrize("params", [{"max_tokens": "5"}, {"stream": "true"},
                                    {"temperature": True}, {"max_completion_tokens": 5.5}])
async def test_values_are_refused_unless_of_their_type(clients: list[AsyncOpenAI],
                                                       redis: Redis, params: dict[str, Any]
                                                       ) -> None:
    """Strictly, as the OpenAPI document says a value is: no "5" for an integer."""
    with pytest.raises(openai.BadRequestError) as refused:
        await clients[0].chat.completions.create(
            model="simulated", messages=[{"role": "user", "content": "x"}],
            extra_body=params)
    assert refused.value.code == "invalid_request" and refused.value.param == next(iter(params))
    with pytest.raises(openai.BadRequestError) as refused:
        await clients[0].responses.create(model="simulated", input="x",
                                          extra_body={"max_output_tokens": "5"})
    assert refused.value.param == "max_output_tokens"
    assert await queued_jobs(redis) == 0  # nothing was enqueued


# --- the Responses API, background mode ---------------------------------------------------


async def test_background_response_resumes_exactly_on_another_edge(
        edges: list[EdgeClient], api_key: str, clients: list[AsyncOpenAI], redis: Redis,
        edge_settings: Settings) -> None:
    slow = edge_settings.model_copy(update={"simulated_tokens_per_second": 100.0})
    async with running_worker(redis, slow):
        created = await clients[0].responses.create(
            model="simulated", input="tell me about resumable streams", background=True,
            instructions="be precise", metadata={"topic": "resume"})
        assert created.status == "queued" and created.background is True
        numbers: list[int] = []
        text = ""
        final = None
        # read a few events, cut the connection, resume on the other edge, repeat
        for turn, cut_after in enumerate((3, 4, 10, 7, 20, None)):
            client = clients[turn % 2]
            if numbers:  # resume after the last event this client holds
                stream = await client.responses.retrieve(created.id, stream=True,
                                                         starting_after=numbers[-1])
            else:
                stream = await client.responses.retrieve(created.id, stream=True)
            read = 0
            async for event in stream:
                numbers.append(event.sequence_number)
                if event.type == "response.output_text.delta":
                    text += event.delta
                if event.type in ("response.completed", "response.failed"):
                    final = event
                read += 1
                if cut_after is not None and read >= cut_after:
                    break
            await stream.close()
            if final is not None:
                break
    assert final is not None and final.type == "response.completed"
    assert numbers == sorted(set(numbers)), "a sequence_number repeated or went back"
    assert numbers[0] == 0 and numbers == list(range(len(numbers)))
    stream_id = created.id.removeprefix("resp_")
    assert text == (await stored(edges[1], api_key, stream_id))["text"] != ""
    assert final.response.output_text == text
    assert final.response.metadata == {"topic": "resume"}
    retrieved = await clients[1].responses.retrieve(created.id)
    assert retrieved.status == "completed" and retrieved.output_text == text
    assert retrieved.instructions == "be precise"


async def test_response_cancel_and_foreground(edges: list[EdgeClient], api_key: str,
                                              clients: list[AsyncOpenAI], redis: Redis,
                                              edge_settings: Settings) -> None:
    client = clients[0]
    queued = await client.responses.create(model="simulated", input="never run",
                                           background=True)
    cancelled = await client.responses.cancel(queued.id)  # no worker yet: still queued
    assert cancelled.status == "cancelled"
    async with running_worker(redis, edge_settings):
        done = await client.responses.create(model="simulated", input="wait for me",
                                             max_output_tokens=12)
    assert done.status == "incomplete" and done.incomplete_details is not None
    assert done.incomplete_details.reason == "max_output_tokens"
    stream_id = done.id.removeprefix("resp_")
    assert done.output_text == (await stored(edges[1], api_key, stream_id))["text"]
    assert done.usage is not None and done.usage.output_tokens == 12
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve("resp_" + "A" * 22)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model="simulated", input="x",
                                      previous_response_id=done.id)
    assert refused.value.param == "previous_response_id"
    for query in ("starting_after=x", "starting_after=5_0", "starting_after=-2",
                  "starting_after="):
        # malformed: refused whether it is used (stream=true) or not
        for stream in ("", "&stream=true"):
            got = await edges[0].get(f"/v1/responses/{done.id}?{query}{stream}",
                                     headers=bearer(api_key))
            assert got.status == 400, (query, stream)
            assert (await got.json())["error"]["code"] == "invalid_request"
