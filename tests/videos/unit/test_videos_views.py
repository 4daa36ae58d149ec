"""Request bodies and responses: validation (422 material) and camelCase output."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from siteview_common.pagination import CursorCodec, Page
from siteview_videos.queries import list_scope
from siteview_videos.views import NewVideo, VideoChanges, VideoView, ViewCount


class TestNewVideo:
    def test_title_is_stripped(self) -> None:
        video = NewVideo.model_validate({"title": "  Hello ", "url": "https://e.com/v"})
        assert (video.title, video.url) == ("Hello", "https://e.com/v")

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"title": "t"},
            {"url": "https://e.com"},
            {"title": "   ", "url": "https://e.com"},
            {"title": "x" * 201, "url": "https://e.com"},
            {"title": "t", "url": "e.com"},
            {"title": "t", "url": "ftp://e.com"},
            {"title": "t", "url": "https://e.com/" + "a" * 2040},
            {"title": None, "url": "https://e.com"},
            {"title": 5, "url": "https://e.com"},
            {"title": "t", "url": "https://e.com", "views": 1000},
            {"title": "t", "url": "https://e.com", "userId": "user_other"},
        ],
    )
    def test_invalid_bodies_are_refused(self, body: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            NewVideo.model_validate(body)


class TestVideoChanges:
    def test_only_the_given_fields_change(self) -> None:
        assert VideoChanges.model_validate({"title": " New "}).fields() == {"title": "New"}
        assert VideoChanges.model_validate({"url": "http://e.com"}).fields() == {
            "url": "http://e.com"
        }
        both = VideoChanges.model_validate({"title": "a", "url": "http://e.com"})
        assert both.fields() == {"title": "a", "url": "http://e.com"}

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"title": None},
            {"url": None},
            {"title": "ok", "url": None},
            {"title": ""},
            {"url": "not a url"},
            {"views": 3},
        ],
    )
    def test_empty_null_or_invalid_edits_are_refused(self, body: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            VideoChanges.model_validate(body)


DOC = {
    "_id": "abc",
    "userId": "user_1",
    "title": "t",
    "url": "https://e.com",
    "views": 3,
    "createdAt": 1,
    "updatedAt": 2,
    "deletedAt": None,
}


def test_a_video_is_shown_in_camel_case_with_its_id() -> None:
    assert VideoView.from_doc(DOC).model_dump(by_alias=True) == {
        "id": "abc",
        "userId": "user_1",
        "title": "t",
        "url": "https://e.com",
        "views": 3,
        "createdAt": 1,
        "updatedAt": 2,
    }


def test_a_page_follows_the_convex_contract() -> None:
    page = Page[VideoView](page=[VideoView.from_doc(DOC)], continue_cursor="c", is_done=False)
    dumped = page.model_dump(by_alias=True)
    assert set(dumped) == {"page", "continueCursor", "isDone"}
    assert ViewCount(views=4).model_dump() == {"views": 4}


def test_a_users_cursor_is_refused_for_another_users_list() -> None:
    from siteview_common.pagination import InvalidCursorError, Position

    codec = CursorCodec("secret")
    cursor = codec.encode(list_scope("user_a"), Position(5, "x"))
    assert codec.decode(list_scope("user_a"), cursor) == Position(5, "x")
    with pytest.raises(InvalidCursorError):
        codec.decode(list_scope("user_b"), cursor)
