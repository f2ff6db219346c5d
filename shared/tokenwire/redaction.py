"""Secrets out of text that crosses a trust boundary (log lines, error details).

``redact`` removes what is known to be secret (the values passed in, such as
the provider's API key) and what looks like a credential wherever it came
from: ``Bearer …`` tokens, ``sk-…`` style API keys, the user-info part of a
URL (``https://user:pass@host``) and credential-like query parameters
(``?token=…``, ``api_key=…``). It errs on the side of hiding: a log line with
one word too many redacted costs nothing, a leaked key costs a rotation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"

#: Shorter "secrets" would redact ordinary words; real keys are much longer.
_MIN_SECRET_LENGTH = 6

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer <token> / Basic <credentials>
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE), rf"\1 {REDACTED}"),
    # OpenAI-style keys: sk-..., sk-proj-..., sk-ant-... (also in "Incorrect API key: sk-...")
    (re.compile(r"\bsk-[A-Za-z0-9_*-]{6,}"), f"sk-{REDACTED}"),
    # URL user-info: scheme://user:password@host
    (re.compile(r"([a-z][a-z0-9+.-]*://)[^/\s:@]*:[^/\s@]*@", re.IGNORECASE), rf"\1{REDACTED}@"),
    # credential-like parameters in a query string or a form body
    (re.compile(r"\b([A-Za-z0-9_-]*(?:token|key|secret|password|signature|sig))=[^&#;\s\"']+",
                re.IGNORECASE), rf"\1={REDACTED}"),
    # a JWT (a stream or conversation token) wherever it stands: header.payload.signature
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"), REDACTED),
    # Tokenwire API keys (twk_<key id>_<secret>): the key id may stay, the secret never
    (re.compile(r"\b(twk_[a-z0-9]{16}_)[A-Za-z0-9_-]+"), rf"\1{REDACTED}"),
)


def redact_url(url: str) -> str:
    """``url`` fit for a log line: credential-like query values (``token=`` —
    a stream token, or an API key sent that way) replaced by ``[redacted]``."""
    return redact(url)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with ``secrets`` and anything credential-shaped replaced by ``[redacted]``."""
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
