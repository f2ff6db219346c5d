"""The OpenAPI 3.1 document of the edge's HTTP API, served at ``GET /openapi.json``.

One file, ``static/openapi.json``, is the document: paths, responses, error
shapes and security schemes are written there by hand. The schemas of the
request bodies are not: they come from the pydantic models that validate those
bodies (``MODELS``), with the limits that are settings (the ``max_tokens``
maximum and its OpenAI namesakes, ``token_ttl_seconds``, a conversation
message's length) filled in from the edge's settings. (Not the models it
serves: the document is public, and ``GET /v1/models`` needs an API key.) The
edge serves the file with those schemas regenerated, so what it serves can
never disagree with what it accepts; the file holds them as generated for the
default settings, and ``tests/unit/test_openapi.py`` fails when the file and
the code drift apart (a schema, a route, a status). After changing a model, run
``make openapi`` (``python -m tokenwire.edge.openapi``) to rewrite the file.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from tokenwire.apikeys import KeySpec
from tokenwire.edge.chat_completions import ChatRequest
from tokenwire.edge.conversations import ConversationRequest, MessageRequest
from tokenwire.edge.pages import STATIC
from tokenwire.edge.responses import ResponseRequest
from tokenwire.edge.ui_chat import UIChatRequest
from tokenwire.jobs import JobRequest
from tokenwire.settings import Settings

DOCUMENT_PATH = STATIC / "openapi.json"
#: The request bodies whose schemas are generated, each with the models it refers to.
MODELS: tuple[type[BaseModel], ...] = (JobRequest, KeySpec, ConversationRequest, MessageRequest,
                                       UIChatRequest, ChatRequest, ResponseRequest)
#: Properties (of any body) whose maximum is a setting: the property, the setting.
_MAXIMA = {"max_tokens": "max_tokens_limit", "max_completion_tokens": "max_tokens_limit",
           "max_output_tokens": "max_tokens_limit", "token_ttl_seconds": "token_max_ttl_seconds"}
_REF_TEMPLATE = "#/components/schemas/{model}"
_HEADERS = {
    "Cache-Control": "public, max-age=300",
    "Access-Control-Allow-Origin": "*",  # public, no credentials: any tool may load it
}

Document = dict[str, Any]


def model_schemas(settings: Settings) -> dict[str, Any]:
    """``components.schemas`` of the request bodies, from their models, with the
    limits of ``settings``."""
    schemas: dict[str, Any] = {}
    for model in MODELS:
        schema = model.model_json_schema(ref_template=_REF_TEMPLATE)
        for name, definition in [*schema.pop("$defs", {}).items(), (model.__name__, schema)]:
            if schemas.setdefault(name, definition) != definition:
                raise ValueError(f"two request-body schemas are named {name}")
    for schema in schemas.values():
        for name, setting in _MAXIMA.items():
            if name in schema.get("properties", {}):
                _constrain(schema["properties"][name], maximum=getattr(settings, setting))
    _constrain(schemas[MessageRequest.__name__]["properties"]["content"],
               maxLength=settings.conversation_max_chars)
    return schemas


def _constrain(schema: dict[str, Any], **keywords: int) -> None:
    """Add ``keywords`` to a property's schema, or to its non-null branch
    (``{"anyOf": [{"type": "integer", ...}, {"type": "null"}]}``)."""
    (value,) = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    value.update(keywords)


@cache
def kept_document() -> Document:
    """The document as kept in the repository (read once; never mutated)."""
    document: Document = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))
    return document


def document(settings: Settings) -> Document:
    """The document for an edge with ``settings``: the kept one with the body
    schemas generated from the models and these settings."""
    current = copy.deepcopy(kept_document())
    current["components"]["schemas"].update(model_schemas(settings))
    return current


def setup_openapi(app: web.Application, settings: Settings) -> None:
    body = json.dumps(document(settings), ensure_ascii=False).encode()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json", charset="utf-8",
                            headers=_HEADERS)

    app.router.add_get("/openapi.json", openapi_json)


def main() -> None:
    """Rewrite the kept document's generated schemas (``make openapi``)."""
    defaults = Settings.model_construct()  # the defaults, not this shell's environment
    DOCUMENT_PATH.write_text(
        json.dumps(document(defaults), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
