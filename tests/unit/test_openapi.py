"""The OpenAPI document kept in the repository agrees with the code: it is valid
OpenAPI 3.1, its request-body schemas are what the pydantic models generate,
it lists exactly the routes the edge serves, and its errors are described the
same way everywhere. (``tests/e2e/test_openapi_fuzz.py`` holds the running
edge to it.)"""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from pydantic import BaseModel, ValidationError

from tests.conftest import ADMIN_KEY, TOKEN_SECRET
from tokenwire.apikeys import KeySpec
from tokenwire.edge import chat_completions, responses
from tokenwire.edge.app import create_app
from tokenwire.edge.chat_completions import ChatRequest
from tokenwire.edge.conversations import ConversationRequest, MessageRequest
from tokenwire.edge.openai_shape import refuse_unknown
from tokenwire.edge.openapi import document, kept_document, model_schemas
from tokenwire.edge.responses import ResponseRequest
from tokenwire.edge.ui_chat import UIChatRequest
from tokenwire.errors import TokenwireError
from tokenwire.jobs import JobRequest
from tokenwire.settings import Settings

DEFAULTS = Settings.model_construct()
KEPT = kept_document()
METHODS = ("get", "post", "put", "patch", "delete")


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, operation) for path, item in doc["paths"].items()
            for method, operation in item.items() if method in METHODS]


def test_the_kept_document_is_valid_openapi_3_1() -> None:
    validate(KEPT)  # openapi-spec-validator picks the 3.1 schema from "openapi"
    assert KEPT["openapi"].startswith("3.1.")


def test_the_body_schemas_are_the_models_own() -> None:
    kept = KEPT["components"]["schemas"]
    for name, schema in model_schemas(DEFAULTS).items():
        assert kept.get(name) == schema, (
            f"static/openapi.json's {name} is not what its model generates: run make openapi")


def test_the_served_document_carries_the_edges_own_limits() -> None:
    settings = Settings.model_construct(max_tokens_limit=77, token_max_ttl_seconds=600,
                                        conversation_max_chars=99)
    schemas = document(settings)["components"]["schemas"]
    tokens = {"type": "integer", "minimum": 1, "maximum": 77}
    lifetime = {"type": "integer", "minimum": 60, "maximum": 600}
    for body, limits in [("JobRequest", {"max_tokens": tokens, "token_ttl_seconds": lifetime}),
                         ("MessageRequest", {"max_tokens": tokens,
                                             "token_ttl_seconds": lifetime}),
                         ("ConversationRequest", {"token_ttl_seconds": lifetime}),
                         ("UIChatRequest", {"max_tokens": tokens}),
                         ("ChatRequest", {"max_tokens": tokens, "max_completion_tokens": tokens}),
                         ("ResponseRequest", {"max_output_tokens": tokens})]:
        for name, limited in limits.items():
            assert limited in schemas[body]["properties"][name]["anyOf"], f"{body}.{name}"
    assert schemas["MessageRequest"]["properties"]["content"]["maxLength"] == 99
    assert document(DEFAULTS) == KEPT


def test_the_document_lists_exactly_the_routes_the_edge_serves() -> None:
    settings = Settings(_env_file=None, redis_url="redis://127.0.0.1:1/0",
                        token_secret=TOKEN_SECRET, admin_key=ADMIN_KEY,
                        demo_api_key="twk_" + "a" * 16 + "_" + "b" * 43)
    app = create_app(settings)  # every optional route on; nothing connects before startup
    served = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.resource is not None and route.method not in ("HEAD", "OPTIONS")}
    documented = {(method, path) for method, path, _ in operations(KEPT)}
    assert served == documented


def test_every_error_is_the_error_shape_with_its_headers() -> None:
    """Tokenwire's own shape, or OpenAI's on the OpenAI routes."""
    responses = KEPT["components"]["responses"]
    for method, path, operation in operations(KEPT):
        shape = "OpenAIError" if "openai" in operation["tags"] else "Error"
        for status, described in operation["responses"].items():
            if not status.startswith(("4", "5")) or path == "/readyz":
                continue
            response = (responses[described["$ref"].rsplit("/", 1)[1]] if "$ref" in described
                        else described)
            where = f"{method} {path} {status}"
            assert response["content"]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{shape}"}, where
            headers = response.get("headers", {})
            if status == "401":
                assert headers["WWW-Authenticate"]["required"], where
            if status in ("429", "503"):
                assert headers["Retry-After"]["required"], where


def test_every_operation_is_named_and_says_who_may_call_it() -> None:
    names = [operation["operationId"] for _, _, operation in operations(KEPT)]
    assert len(names) == len(set(names))
    for method, path, operation in operations(KEPT):
        assert "security" in operation, f"{method} {path}"


# The JSON Schema says what the validators say, also where pydantic needs code
# (exactly one of messages/prompt; cancel_after of at least a second).
@pytest.mark.parametrize(("body", "valid"), [
    ({"prompt": "a"}, True),
    ({"messages": [{"role": "user", "content": "a"}]}, True),
    ({"prompt": "a", "messages": None}, True),
    ({"prompt": "a", "messages": [{"role": "user", "content": "a"}]}, False),
    ({}, False),
    ({"prompt": None, "messages": None}, False),
    ({"prompt": "a", "on_disconnect": "cancel_after=1"}, True),
    ({"prompt": "a", "on_disconnect": "cancel_after=0001.5"}, True),
    ({"prompt": "a", "on_disconnect": "cancel_after=999999.999"}, True),
    ({"prompt": "a", "on_disconnect": "cancel_after=0.999"}, False),
    ({"prompt": "a", "on_disconnect": "cancel_after=0"}, False),
    ({"prompt": "a", "on_disconnect": "cancel_after=1000000"}, False),
    ({"prompt": "a", "max_tokens": 16_384, "token_ttl_seconds": 86_400}, True),
    ({"prompt": "a", "token_scopes": ["read", "cancel"]}, True),
    ({"prompt": "a", "metadata": {"k": [1]}}, False),
    ({"prompt": "a", "max_tokens": "5"}, False),
    ({"prompt": "a", "max_tokens": 5.0, "token_ttl_seconds": 60.0}, True),  # JSON integers
    ({"prompt": "a", "max_tokens": 5.5}, False),
    ({"prompt": "a", "temperature": True}, False),
])
def test_the_job_schema_and_the_model_agree(body: dict[str, Any], valid: bool) -> None:
    assert _validator("JobRequest").is_valid(body) == valid
    assert _model_accepts(JobRequest, body) == valid


def _validator(name: str) -> Draft202012Validator:
    """The generated schema ``name``, as a JSON Schema validator."""
    schemas = model_schemas(DEFAULTS)
    return Draft202012Validator({"components": {"schemas": schemas}, **schemas[name]})


def _model_accepts(model: type[BaseModel], body: dict[str, Any]) -> bool:
    try:
        model.model_validate(body, strict=True)  # as the edge validates bodies
    except ValidationError:
        return False
    return True


def test_the_key_spec_schema_is_the_models() -> None:
    assert model_schemas(DEFAULTS)["KeySpec"]["properties"].keys() == KeySpec.model_fields.keys()
    # JSON integers, as the edge validates them (strictly)
    assert KeySpec.model_validate({"tenant": "a", "max_running": 3.0}, strict=True).max_running == 3
    with pytest.raises(ValidationError):
        KeySpec.model_validate({"tenant": "a", "max_running": "3"}, strict=True)


def _chat_accepts(body: dict[str, Any]) -> bool:
    """As ``POST /v1/chat/completions`` reads a body."""
    try:
        refuse_unknown(body, chat_completions.SUPPORTED, chat_completions.NEUTRAL)
        chat = ChatRequest.model_validate(body, strict=True)
        chat_completions._messages(chat.messages)
    except (TokenwireError, ValidationError):
        return False
    return True


def _response_accepts(body: dict[str, Any]) -> bool:
    """As ``POST /v1/responses`` reads a body."""
    try:
        refuse_unknown(body, responses.SUPPORTED, responses.NEUTRAL)
        responses._input_messages(ResponseRequest.model_validate(body, strict=True))
    except (TokenwireError, ValidationError):
        return False
    return True


SAY = [{"role": "user", "content": "x"}]


# What Tokenwire does not implement is accepted only with its neutral value, or null.
@pytest.mark.parametrize(("body", "valid"), [
    ({"model": "m", "messages": SAY}, True),
    ({"model": "m", "messages": SAY, "n": 1, "logprobs": False, "seed": None}, True),
    ({"model": "m", "messages": SAY, "n": 2}, False),
    ({"model": "m", "messages": SAY, "logprobs": 0}, False),  # false is not 0
    ({"model": "m", "messages": SAY, "n": True}, False),
    ({"model": "m", "messages": SAY, "seed": 1}, False),
    ({"model": "m", "messages": SAY, "max_tokens": "5"}, False),
    ({"model": "m", "messages": SAY, "max_tokens": 5.0}, True),
    ({"model": "m", "messages": []}, False),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, False),
    ({"model": "m", "messages": [{"role": "user"}]}, False),
    ({"model": "m", "messages": [{"role": "user", "content": "x", "name": "bob"}]}, True),
    ({"model": "m", "messages": [{"role": "user", "content": "x", "tool_calls": []}]}, False),
    ({"model": "m", "messages": [{"role": "user", "content": "x", "tool_calls": None}]}, True),
    ({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "input_text", "text": "b"}]}]}, True),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, False),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, False),
])
def test_the_chat_schema_and_the_edge_agree(body: dict[str, Any], valid: bool) -> None:
    assert _validator("ChatRequest").is_valid(body) == valid
    assert _chat_accepts(body) == valid


@pytest.mark.parametrize(("body", "valid"), [
    ({"model": "m", "input": "x"}, True),
    ({"model": "m", "input": ""}, False),
    ({"model": "m", "input": []}, False),
    ({"model": "m", "input": SAY}, True),
    ({"model": "m", "input": [{"type": "message", "role": "developer", "content": [
        {"type": "input_text", "text": "x"}]}]}, True),
    ({"model": "m", "input": [{"type": "function_call", "role": "user", "content": "x"}]},
     False),
    ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, False),
    ({"model": "m", "input": "x", "store": True, "tools": [], "tool_choice": "none",
      "text": {"format": {"type": "text"}}, "previous_response_id": None}, True),
    ({"model": "m", "input": "x", "store": 1}, False),
    ({"model": "m", "input": "x", "previous_response_id": "resp_x"}, False),
    ({"model": "m", "input": "x", "max_output_tokens": "5"}, False),
])
def test_the_response_schema_and_the_edge_agree(body: dict[str, Any], valid: bool) -> None:
    assert _validator("ResponseRequest").is_valid(body) == valid
    assert _response_accepts(body) == valid


@pytest.mark.parametrize(("model", "body", "valid"), [
    (ConversationRequest, {}, True),
    (ConversationRequest, {"id": "a-b_c", "token_ttl_seconds": 600.0}, True),  # a JSON integer
    (ConversationRequest, {"token_ttl_seconds": "600"}, False),
    (ConversationRequest, {"token_scopes": ["read", "admin"]}, False),
    (ConversationRequest, {"id": "a b"}, False),
    (MessageRequest, {"content": "x", "max_tokens": 5.0, "on_disconnect": "continue"}, True),
    (MessageRequest, {"content": "x", "max_tokens": "5"}, False),
    (MessageRequest, {"content": ""}, False),
    (MessageRequest, {"content": "x", "prompt": "y"}, False),
    (UIChatRequest, {"id": "c", "messages": [], "custom": "an app's own field"}, True),
    (UIChatRequest, {"id": "c", "messages": [], "max_tokens": "5"}, False),
    (UIChatRequest, {"id": "c", "messages": [], "trigger": "resume-stream"}, False),
])
def test_the_conversation_schemas_and_the_models_agree(model: type[BaseModel],
                                                       body: dict[str, Any], valid: bool
                                                       ) -> None:
    assert _validator(model.__name__).is_valid(body) == valid
    assert _model_accepts(model, body) == valid
