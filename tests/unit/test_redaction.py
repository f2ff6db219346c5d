"""What crosses a trust boundary is clean: the redaction of secrets in log lines
and error details, and the log formatters that apply it to every line."""

from __future__ import annotations

import logging
import sys

import pytest

from tokenwire.logs import JsonFormatter, TextFormatter
from tokenwire.redaction import REDACTED, redact

KEY = "sk-proj-Abc123XYZ789secretsecret"


@pytest.mark.parametrize(("text", "gone"), [
    (f"Incorrect API key provided: {KEY}.", KEY),
    ("Incorrect API key provided: sk-proj-****************************ab12.", "ab12"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "eyJ"),
    ("auth header was basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
    ("POST https://svc:hunter22@llm.internal:8443/v1/chat failed", "hunter22"),
    ("redis://:p4ssw0rd@10.0.0.3:6379/0 unreachable", "p4ssw0rd"),
    ("GET /v1/streams/x/events?token=eyJ.abc.def&last_event_id=1.2", "eyJ.abc.def"),
    ("retrying with api_key=AKIAXXXXXXXX and client_secret=s3cr3t!", "AKIAXXXXXXXX"),
    ("retrying with api_key=AKIAXXXXXXXX and client_secret=s3cr3t!", "s3cr3t!"),
])
def test_credential_shaped_text_is_redacted(text: str, gone: str) -> None:
    cleaned = redact(text)
    assert gone not in cleaned
    assert REDACTED in cleaned


def test_known_secrets_are_redacted_whatever_their_shape() -> None:
    assert redact("the key xoxb-11112222-abcd failed", ["xoxb-11112222-abcd"]) == (
        f"the key {REDACTED} failed")


def test_ordinary_text_is_left_alone() -> None:
    text = ("stream Qx3AbCdEfGhIjKlMnOpQrS cursor 3f2a1b0c9d8e.42 at https://example.com/v1 "
            "tokens=60 task-key seq")
    assert redact(text, ["", None, "seq"]) == text  # too short to be a secret


@pytest.mark.parametrize("formatter", [TextFormatter([KEY]), JsonFormatter(secrets=[KEY])])
def test_log_lines_exceptions_included_never_carry_a_secret(
        formatter: logging.Formatter) -> None:
    try:
        raise ValueError(f"upstream said: bad key {KEY} at https://u:pw123@h/v1")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "call with %s failed",
                                   (f"Bearer {KEY}",), sys.exc_info())
    record.url = "/v1/streams/abc/events?token=eyJsecret"
    line = formatter.format(record)
    assert KEY not in line and "pw123" not in line and "eyJsecret" not in line
    assert "upstream said" in line and "call with" in line
