"""The chaos checker must catch what it exists to catch: each broken history
below is rejected, and a correct one (with a merged frame, a reset and a
snapshot) is accepted."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.chaos.checker import ClientRecord, check

MODEL = "Hello, world"


def record(*events: tuple[str | None, str, dict[str, object]]) -> ClientRecord:
    history = ClientRecord("c", "s" * 22)
    history.connect(200)
    for event_id, event_type, data in events:
        history.receive(event_id, event_type, json.dumps(data))
    return history


def done(text: str = MODEL) -> dict[str, object]:
    return {"finish_reason": "stop", "sha256": hashlib.sha256(text.encode()).hexdigest()}


def test_a_correct_history_passes() -> None:
    verdict = check(record(
        ("a.1", "start", {}), ("a.2", "token", {"content": "stale"}),
        ("b.0", "reset", {"epoch": "b", "reason": "new_attempt"}),
        ("b.1", "start", {}), ("b.2", "token", {"content": "Hel"}),
        ("b.4", "token", {"content": "lo, "}),  # a merged frame: 3 and 4
        (None, "reconnect", {"reason": "slow_consumer"}),  # not part of the stream
        ("b.5", "token", {"content": "world"}), ("b.6", "done", done()),
    ), MODEL)
    assert verdict.violations == [] and verdict.resets == 1 and verdict.text == MODEL


def test_a_late_joiner_snapshot_passes() -> None:
    verdict = check(record(("a.3", "snapshot", {"content": "Hello"}),
                           ("a.4", "token", {"content": ", world"}), ("a.5", "done", done())),
                    MODEL)
    assert verdict.violations == []


@pytest.mark.parametrize(("events", "complaint"), [
    ([("a.1", "start", {}), ("a.3", "done", done(""))], "gap"),
    ([("a.1", "start", {}), ("a.2", "token", {"content": "Hello, world"}),
      ("a.2", "token", {"content": "Hello, world"}), ("a.3", "done", done())], "repeats"),
    ([("a.1", "start", {}), ("b.1", "start", {}), ("b.2", "token", {"content": MODEL}),
      ("b.3", "done", done())], "without a reset"),
    ([("a.1", "start", {}), ("a.2", "token", {"content": MODEL}), ("a.3", "done", done()),
      ("a.4", "done", done())], "after the terminal"),
    ([("a.1", "start", {}), ("a.2", "token", {"content": "Hello"})], "no terminal"),
    ([("a.1", "start", {}), ("a.2", "token", {"content": "Hello, wor1d"}),
      ("a.3", "done", done("Hello, wor1d"))], "differs from the model"),
    ([("a.1", "start", {}), ("a.2", "token", {"content": MODEL}),
      ("a.3", "done", done("other"))], "sha256"),
    ([("a.1", "start", {}), ("a.2", "token", {"content": "Help"}),
      ("a.3", "error", {"code": "x"})], "not a prefix"),
])
def test_each_broken_history_is_caught(events: list[tuple[str | None, str, dict[str, object]]],
                                       complaint: str) -> None:
    violations = check(record(*events), MODEL).violations
    assert any(complaint in v for v in violations), violations
