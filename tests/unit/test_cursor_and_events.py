from __future__ import annotations

import json

import pytest

from tokenwire import keys
from tokenwire.cursor import Cursor
from tokenwire.errors import MalformedRequest
from tokenwire.events import Event, dumps, reset, snapshot


def test_cursor_round_trip() -> None:
    cursor = Cursor.parse("a1b2c3.42")
    assert cursor == Cursor("a1b2c3", 42)
    assert str(cursor) == "a1b2c3.42"
    assert Cursor.parse("e_-x.0").seq == 0


@pytest.mark.parametrize("raw", ["", "abc", "abc.", ".5", "abc.-1", "abc.01", "a b.1",
                                 "abc.1.2", "abc.1x", "é.1", "a" * 33 + ".1", "abc.1" + "0" * 18,
                                 "abc.1\n"])
def test_malformed_cursors_are_rejected(raw: str) -> None:
    with pytest.raises(MalformedRequest):
        Cursor.parse(raw)


def test_empty_cursor_means_from_the_start() -> None:
    assert Cursor.parse_optional(None) is None
    assert Cursor.parse_optional("") is None


def test_new_ids_are_cursor_safe_and_random() -> None:
    ids = {keys.new_stream_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(keys.is_stream_id(i) for i in ids)
    epoch = keys.new_epoch()
    assert Cursor.parse(f"{epoch}.7").epoch == epoch


def test_keys_share_a_hash_tag_and_never_contain_client_text() -> None:
    sid = keys.new_stream_id()
    tagged = [keys.events(sid), keys.meta(sid), keys.text(sid), keys.live_channel(sid)]
    assert all(f"{{{sid}}}" in k for k in tagged)
    assert "my key" not in keys.idempotency("my key")


def test_data_is_one_line_whatever_the_model_says() -> None:
    line = dumps({"content": "a\r\nb\rc\nd\x00\u2028 data: x"})
    assert "\n" not in line and "\r" not in line
    assert json.loads(line)["content"] == "a\r\nb\rc\nd\x00\u2028 data: x"


def test_websocket_frame_merges_id_type_and_data() -> None:
    event = Event("ep", 3, "token", dumps({"content": "hi"}))
    assert json.loads(event.ws_frame()) == {"id": "ep.3", "type": "token", "content": "hi"}
    assert json.loads(Event("ep", 1, "x", "{}").ws_frame()) == {"id": "ep.1", "type": "x"}


def test_live_message_round_trip_keeps_spaces_in_data() -> None:
    event = Event("ep", 12, "token", dumps({"content": " a  b "}))
    assert Event.from_live_message(event.to_live_message()) == event


def test_reset_and_snapshot_carry_the_new_position() -> None:
    assert reset("e2", "new_attempt").id == "e2.0"
    assert reset("e2", "new_attempt").payload() == {"reason": "new_attempt", "epoch": "e2"}
    assert snapshot("e2", 9, "text").payload() == {"content": "text"}
