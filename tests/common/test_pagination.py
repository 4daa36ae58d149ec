"""Cursor codec: opaque, tamper-evident, scoped, canonical."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siteview_common.pagination import (
    END,
    MAX_CURSOR_LENGTH,
    CursorCodec,
    InvalidCursorError,
    Position,
)

codec = CursorCodec("secret-a")


def test_a_cursor_round_trips_within_its_scope() -> None:
    cursor = codec.encode("videos:user_1", Position(1700000000000, "abc"))
    assert isinstance(cursor, str)
    assert codec.decode("videos:user_1", cursor) == Position(1700000000000, "abc")
    assert codec.decode("s", codec.encode("s", END)) == END


@pytest.mark.parametrize("scope", ["videos:user_2", "payments:user_1"])
def test_a_cursor_from_another_list_is_refused(scope: str) -> None:
    cursor = codec.encode("videos:user_1", Position(1, "a"))
    with pytest.raises(InvalidCursorError):
        codec.decode(scope, cursor)


def test_a_modified_cursor_is_refused() -> None:
    body, mac = codec.encode("s", Position(1, "a")).rsplit(".", 1)
    forged = CursorCodec("attacker").encode("s", Position(999, "z")).rsplit(".", 1)[0]
    for cursor in (f"{forged}.{mac}", f"{body}.{mac[:-2]}AA", "garbage", "", "a.b.c"):
        with pytest.raises(InvalidCursorError):
            codec.decode("s", cursor)


def test_every_single_character_edit_is_refused() -> None:
    cursor = codec.encode("s", Position(1700000000000, "abcdef"))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for index, char in enumerate(cursor):
        if char == ".":
            continue
        replacement = alphabet[(alphabet.index(char) + 1) % len(alphabet)]
        edited = cursor[:index] + replacement + cursor[index + 1 :]
        with pytest.raises(InvalidCursorError):
            codec.decode("s", edited)


def test_a_cursor_signed_with_another_secret_is_refused() -> None:
    with pytest.raises(InvalidCursorError):
        codec.decode("s", CursorCodec("secret-b").encode("s", Position(1, "a")))


def test_an_over_long_cursor_is_refused_before_it_is_read() -> None:
    cursor = codec.encode("s", Position(1, "a" * 300))
    assert codec.decode("s", cursor) == Position(1, "a" * 300)
    with pytest.raises(InvalidCursorError, match="too long"):
        codec.decode("s", "A" * (MAX_CURSOR_LENGTH + 1))
    with pytest.raises(InvalidCursorError):
        codec.decode("s", cursor + "A" * MAX_CURSOR_LENGTH)


@pytest.mark.parametrize(
    "value", [[1], [1, "a", 2], {"key": 1}, ["1", "a"], [1.5, "a"], [True, "a"], [1, 2], "x"]
)
def test_a_genuinely_signed_value_of_another_shape_is_refused(value: object) -> None:
    cursor = codec._serializer("s").dumps(value)
    with pytest.raises(InvalidCursorError, match="malformed"):
        codec.decode("s", cursor)


@given(st.integers(min_value=-(2**62), max_value=2**62) | st.none(), st.text(max_size=20))
def test_every_position_round_trips_and_has_one_spelling(key: int | None, id_: str) -> None:
    cursor = codec.encode("videos:user_1", Position(key, id_))
    assert codec.decode("videos:user_1", cursor) == Position(key, id_)
    # Base64 leaves spare bits in the last character of each part: setting them must not
    # give a second spelling of the same cursor.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for index in {len(cursor) - 1, cursor.rindex(".") - 1}:
        char = cursor[index]
        for other in alphabet.replace(char, ""):
            with pytest.raises(InvalidCursorError):
                codec.decode("videos:user_1", cursor[:index] + other + cursor[index + 1 :])


@given(st.text(max_size=MAX_CURSOR_LENGTH + 20))
def test_arbitrary_text_is_never_accepted(text: str) -> None:
    with pytest.raises(InvalidCursorError):
        codec.decode("s", text)
