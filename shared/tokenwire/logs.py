"""Logging, configured once by the entry point: key=value text, or one JSON object a line.

Every line, exception text included, goes through ``redact`` on its way out: a
provider's error that quotes our API key, a URL with a token or credentials,
never reach the log as they were.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from typing import Any

from tokenwire.redaction import redact

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class _Redacting(logging.Formatter):
    """Redacts credential-shaped text and the configured ``secrets`` from each line."""

    def __init__(self, fmt: str | None = None, secrets: Iterable[str | None] = ()) -> None:
        super().__init__(fmt)
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        return redact(self._format(record), self._secrets)

    def _format(self, record: logging.LogRecord) -> str:
        return super().format(record)


class JsonFormatter(_Redacting):
    def _format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(_Redacting):
    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets)

    def _format(self, record: logging.LogRecord) -> str:
        line = super()._format(record)
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return f"{line} {extras}" if extras else line


def configure_logging(level: str, fmt: str, secrets: Iterable[str | None] = ()) -> None:
    """``secrets``: values never to be logged as they are (the LLM provider's API key)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets=secrets) if fmt == "json"
                         else TextFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
