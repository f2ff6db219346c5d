"""The Responses API's sequence numbers, derived from the cursor (``response_events``):
the same event gets the same number on every edge, and ``starting_after`` maps
back to the cursor to resume from."""

from __future__ import annotations

from tokenwire.cursor import Cursor
from tokenwire.edge.response_events import STRIDE, Position, position_after, reset_event
from tokenwire.store import StreamMeta


def meta(epoch_attempt: int = 1, last_seq: int = 10, status: str = "running") -> StreamMeta:
    return StreamMeta(stream_id="s" * 22, status=status, epoch="e1", attempt=epoch_attempt,
                      last_seq=last_seq, model="m", tokens=0, created_at_ms=0,
                      finished_at_ms=None, final=None, epoch_attempt=epoch_attempt)


def test_from_the_start_and_within_the_head() -> None:
    assert position_after(None, meta()) == Position(None, -1)
    for seen in (0, 1, 2, 3):  # created, queued, in_progress, item added: replay the head
        assert position_after(seen, meta()) == Position(None, seen)


def test_after_a_token_resumes_from_its_cursor() -> None:
    # the token of seq k is number k + 3
    assert position_after(4, meta()) == Position(Cursor("e1", 1), 4)
    assert position_after(7, meta()) == Position(Cursor("e1", 4), 7)


def test_inside_the_terminal_group_replays_it_filtered() -> None:
    done = meta(last_seq=10, status="done")  # the done event (seq 10) is numbers 13..16
    assert position_after(14, done) == Position(Cursor("e1", 9), 14)


def test_an_earlier_epoch() -> None:
    later = meta(epoch_attempt=2)
    # text of attempt 1 was seen: only a reset can answer it, numbered past all of it
    assert position_after(9, later) == Position(None, -1, reset_from=1)
    assert reset_event(1)["sequence_number"] == STRIDE - 1
    # only the head was seen: the same place in the new epoch
    assert position_after(2, later) == Position(None, STRIDE + 2)
    assert position_after(STRIDE + 5, later) == Position(Cursor("e1", 2), STRIDE + 5)
