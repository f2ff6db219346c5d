"""Token buffers never drop, reorder or rewrite a character."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.buffers import make_buffer

MODES = ["none", "word", "sentence", "coalesce"]

# Arbitrary Unicode without surrogates (they cannot exist in valid text), with
# the characters naive buffers mangle over-represented.
tricky = st.sampled_from(["\r", "\n", "\r\n", "\x00", " ", "  ", "\t", ".", "!", "?", "🚀",
                          "e\u0301", "\u0301", "\U0001f469\u200d\U0001f4bb", "\u2028"])
pieces = st.lists(
    st.one_of(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12), tricky),
    max_size=60,
)
gaps = st.lists(st.floats(min_value=0, max_value=0.2), min_size=60, max_size=60)


def run(mode: str, inputs: list[str], times: list[float], max_delay: float = 0.05,
        max_chars: int = 16) -> list[str]:
    buffer = make_buffer(mode, max_delay, max_chars)  # type: ignore[arg-type]
    out, now = [], 0.0
    for text, gap in zip(inputs, times, strict=False):
        now += gap
        out.append(buffer.push(text, now))
    out.append(buffer.flush())
    return out


@pytest.mark.parametrize("mode", MODES)
@given(inputs=pieces, times=gaps)
@settings(max_examples=300, deadline=None)
def test_output_concatenates_to_input(mode: str, inputs: list[str], times: list[float]) -> None:
    assert "".join(run(mode, inputs, times)) == "".join(inputs)


@pytest.mark.parametrize("mode", MODES)
@given(inputs=pieces, times=gaps)
@settings(max_examples=100, deadline=None)
def test_nothing_is_held_past_its_deadline(mode: str, inputs: list[str], times: list[float]
                                           ) -> None:
    buffer = make_buffer(mode, 0.05, 16)  # type: ignore[arg-type]
    now = 0.0
    for text, gap in zip(inputs, times, strict=False):
        now += gap
        buffer.push(text, now)
        deadline = buffer.deadline()
        assert deadline is None or deadline > now, "expired text must have been released"


def test_word_buffer_keeps_newlines_and_double_spaces() -> None:
    out = run("word", ["Hello", "  wor", "ld\n\nnext", " line"], [0.0] * 4, max_delay=10)
    assert out == ["", "Hello  ", "world\n\n", "next ", "line"]


def test_sentence_buffer_cuts_after_terminator_and_whitespace_or_newline() -> None:
    out = run("sentence", ["One. Tw", "o? Three", "\nFour", "."], [0.0] * 4, max_delay=10)
    assert out == ["One. ", "Two? ", "Three\n", "", "Four."]


def test_sentence_buffer_does_not_cut_decimals() -> None:
    assert run("sentence", ["pi is 3.14 ok"], [0.0], max_delay=10) == ["", "pi is 3.14 ok"]


def test_coalesce_releases_at_max_chars() -> None:
    out = run("coalesce", ["abc", "def", "ghij", "k"], [0.0] * 4, max_delay=10, max_chars=8)
    assert out == ["", "", "abcdefghij", "", "k"]


@pytest.mark.parametrize("mode", ["word", "sentence", "coalesce"])
def test_stalled_model_text_is_released_at_the_deadline(mode: str) -> None:
    buffer = make_buffer(mode, max_delay=0.04, max_chars=1000)  # type: ignore[arg-type]
    assert buffer.push("partial", now=1.005) == ""
    assert buffer.deadline() == pytest.approx(1.04)  # ticks 20 ms apart, >= 20 ms on
    # The generation loop calls flush() when the deadline passes with no new token.
    assert buffer.flush() == "partial"
    assert buffer.deadline() is None


def test_deadline_tracks_the_oldest_held_character() -> None:
    buffer = make_buffer("word", max_delay=1.0, max_chars=0)
    buffer.push("first second", now=0.2)  # releases "first ", holds "second" from t=0.2
    buffer.push("x", now=0.5)
    assert buffer.deadline() == pytest.approx(1.0)  # the first tick (0.5 apart) >= 0.7
    assert buffer.push(" y", now=1.6) == "secondx "
    assert buffer.deadline() == pytest.approx(2.5)  # "y" arrived at 1.6


@given(st.floats(min_value=0, max_value=1e5), st.sampled_from([0.002, 0.02, 0.04, 1.0]))
def test_held_text_is_released_on_the_grid_within_max_delay(arrived: float, max_delay: float
                                                            ) -> None:
    buffer = make_buffer("coalesce", max_delay=max_delay, max_chars=1000)
    buffer.push("held", now=arrived)
    deadline = buffer.deadline()
    assert deadline is not None
    assert arrived + max_delay / 2 * (1 - 1e-9) <= deadline <= arrived + max_delay * (1 + 1e-9)
    ticks = deadline / (max_delay / 2)
    assert ticks == pytest.approx(round(ticks))  # on the shared grid


def test_streams_that_start_holding_within_one_tick_release_together() -> None:
    """What lets a worker send many streams' appends in one round trip."""
    first, second = (make_buffer("coalesce", max_delay=0.04, max_chars=1000) for _ in "ab")
    first.push("a", now=100.001)
    second.push("b", now=100.019)
    assert first.deadline() == pytest.approx(second.deadline()) == pytest.approx(100.04)


def test_none_releases_everything_at_once() -> None:
    assert run("none", ["a", "\r\n", "b"], [0.0] * 3) == ["a", "\r\n", "b", ""]
