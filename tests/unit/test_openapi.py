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
from pydantic import ValidationError

from tests.conftest import ADMIN_KEY, TOKEN_SECRET
from tokenwire.apikeys import KeySpec
from tokenwire.edge.app import create_app
from tokenwire.edge.openapi import document, kept_document, model_schemas
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
    settings = Settings.model_construct(max_tokens_limit=77, token_max_ttl_seconds=600)
    job = document(settings)["components"]["schemas"]["JobRequest"]["properties"]
    assert {"type": "integer", "minimum": 1, "maximum": 77} in job["max_tokens"]["anyOf"]
    assert {"type": "integer", "minimum": 60, "maximum": 600} in (
        job["token_ttl_seconds"]["anyOf"])
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
    responses = KEPT["components"]["responses"]
    for method, path, operation in operations(KEPT):
        for status, described in operation["responses"].items():
            if not status.startswith(("4", "5")) or path == "/readyz":
                continue
            response = (responses[described["$ref"].rsplit("/", 1)[1]] if "$ref" in described
                        else described)
            where = f"{method} {path} {status}"
            assert response["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}, where
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
    schemas = model_schemas(DEFAULTS)
    validator = Draft202012Validator(
        {"components": {"schemas": schemas}, **schemas["JobRequest"]})
    assert validator.is_valid(body) == valid
    try:
        JobRequest.model_validate(body, strict=True)  # as the edge validates bodies
    except ValidationError:
        assert not valid
    else:
        assert valid


def test_the_key_spec_schema_is_the_models() -> None:
    assert model_schemas(DEFAULTS)["KeySpec"]["properties"].keys() == KeySpec.model_fields.keys()
    # JSON integers, as the edge validates them (strictly)
    assert KeySpec.model_validate({"tenant": "a", "max_running": 3.0}, strict=True).max_running == 3
    with pytest.raises(ValidationError):
        KeySpec.model_validate({"tenant": "a", "max_running": "3"}, strict=True)
