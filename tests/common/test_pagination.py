"""Cursor codec: opaque, tamper-evident, scoped."""

from __future__ import annotations

import pytest

from siteview_common.pagination import END, CursorCodec, InvalidCursorError, Position

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
    body, mac = codec.encode("s", Position(1, "a")).split(".")
    forged = CursorCodec("attacker").encode("s", Position(999, "z")).split(".")[0]
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
