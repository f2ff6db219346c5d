"""Request bodies, read once and the same way by every JSON endpoint.

``read_json_object`` checks the content type and the size, reads the body
within ``request_body_timeout_seconds`` (a client that dribbles a body gets
408 instead of holding the request open), and parses it with a bound on
nesting: JSON nested deeper than ``max_json_depth`` is 400 ``malformed_json``
like any other unparseable body — never a ``RecursionError`` and a 500 —, and so
is a lone surrogate escape in any string (text no handler can encode).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from tokenwire.errors import (
    MalformedRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from tokenwire.settings import Settings


async def read_json_object(request: web.Request, settings: Settings) -> dict[str, Any]:
    """The body as a JSON object, or a domain error (400, 408, 413, 415)."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("unsupported_media_type", "send Content-Type: application/json")
    too_large = PayloadTooLarge("too_large", f"the body exceeds {settings.max_body_bytes} bytes")
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise too_large
    try:
        async with asyncio.timeout(settings.request_body_timeout_seconds):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise too_large from exc
    except TimeoutError as exc:
        raise RequestTimeout("request_timeout", "the request body did not arrive in time"
                             ) from exc
    body = parse_json(raw, settings.max_json_depth)
    if not isinstance(body, dict):
        raise MalformedRequest("malformed_json", "the body must be a JSON object")
    return body


def parse_json(raw: bytes | str, max_depth: int) -> Any:
    """Parse JSON from a client; ``MalformedRequest`` for anything unparseable,
    too deeply nested included."""
    try:
        value = json.loads(raw)
    except RecursionError as exc:  # thousands of levels: the C parser's own limit
        raise _too_deep(max_depth) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest("malformed_json", f"the body is not valid JSON: {exc}") from exc
    _check_parsed(value, max_depth)
    return value


def _too_deep(max_depth: int) -> MalformedRequest:
    return MalformedRequest("malformed_json", f"JSON nested deeper than {max_depth} levels")


def _check_parsed(value: Any, max_depth: int) -> None:
    """Refuse (400) what ``json.loads`` accepts but no handler may meet: more
    than ``max_depth`` nested containers, and a lone surrogate (``"\\ud800"``)
    in any string — text that cannot be encoded reaches Redis, a hash or a
    log as a 500. One iterative walk: no recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_encodable(item)
            continue
        if isinstance(item, dict):
            children: list[Any] = [*item.keys(), *item.values()]
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise _too_deep(max_depth)
        stack.extend((child, depth + 1) for child in children)


def _check_encodable(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise MalformedRequest("malformed_json", "text must be valid Unicode "
                               "(a lone surrogate escape is not)") from exc
