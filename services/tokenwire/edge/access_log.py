"""One access log line per request, in the configured log format.

aiohttp calls ``AccessLog.log`` once a request is answered (for a stream,
when it ends): method, path, status, duration and the stream id go out as one
line through ``logging`` (``TOKENWIRE_LOG_FORMAT``: key=value text or JSON).
A ``token=`` query value — a stream token in a URL a browser was handed — is
replaced before the path is logged: the query is logged as the edge decoded
it (``?%74oken=`` is ``token``), through ``redaction.redact_url``. Nothing is
formatted when INFO is off.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, Request, StreamResponse

from tokenwire.redaction import redact_url

LOGGER_NAME = "tokenwire.access"


def redacted(request: BaseRequest) -> str:
    """The request's path and query as the edge read them, credentials redacted."""
    if not request.query:
        return request.path
    return redact_url(f"{request.path}?{urlencode(list(request.query.items()))}")


class AccessLog(AbstractAccessLogger):
    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        path = redacted(request)
        matched = request.match_info.get("stream_id") if isinstance(request, Request) else None
        stream_id = matched or response.headers.get("X-Stream-ID")
        duration_ms = round(time * 1000, 1)
        self.logger.info("%s %s %d %.1fms", request.method, path, response.status, duration_ms,
                         extra={"method": request.method, "path": path,
                                "status": response.status, "duration_ms": duration_ms,
                                "stream_id": stream_id})
