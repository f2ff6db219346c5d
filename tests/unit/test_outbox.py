"""The per-connection outbox: merging, and its bound."""

from __future__ import annotations

from tokenwire.edge.outbox import Outbox
from tokenwire.events import Event, dumps


def token(seq: int, content: str, epoch: str = "e") -> Event:
    return Event(epoch, seq, "token", dumps({"content": content}))


def test_queued_tokens_merge_into_one_frame_with_the_last_cursor() -> None:
    outbox = Outbox(max_chars=10_000)
    outbox.push(Event("e", 1, "start", "{}"))
    for seq, text in enumerate(["a", "\r\n", "🚀", " b"], start=2):
        outbox.push(token(seq, text))
    outbox.push(Event("e", 6, "done", "{}"))
    frames = outbox.take()
    assert [(f.type, f.seq) for f in frames] == [("start", 1), ("token", 5), ("done", 6)]
    assert frames[1].payload() == {"content": "a\r\n🚀 b"}
    assert outbox.merged == 3
    assert len(outbox) == 0 and outbox.take() == []


def test_tokens_of_different_epochs_never_merge() -> None:
    outbox = Outbox(max_chars=10_000)
    outbox.push(token(2, "old", epoch="e1"))
    outbox.push(Event("e2", 0, "reset", dumps({"reason": "x", "epoch": "e2"})))
    outbox.push(token(2, "new", epoch="e2"))
    assert len(outbox) == 3


def test_the_outbox_is_full_past_its_budget_until_taken() -> None:
    outbox = Outbox(max_chars=30)
    outbox.push(Event("e", 1, "start", dumps({"pad": "x" * 10})))
    assert not outbox.full
    outbox.push(token(2, "y" * 30))
    assert outbox.full
    assert [e.type for e in outbox.take()] == ["start", "token"]
    assert not outbox.full


def test_a_long_backlog_merges_into_one_exact_frame() -> None:
    outbox = Outbox(max_chars=10**7)
    pieces = [f"{i}\r\n🚀 " for i in range(5000)]
    for seq, piece in enumerate(pieces, start=2):
        outbox.push(token(seq, piece))
    [frame] = outbox.take()
    assert frame.seq == 5001 and frame.payload() == {"content": "".join(pieces)}
    assert outbox.merged == 4999
