"""The pure rules: validation, the stored shape of a video, and what a user event means."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from siteview_common.consumer import PoisonMessageError
from siteview_common.events import PublishedEvent
from siteview_videos import domain
from siteview_videos.domain import (
    AccountDeletedError,
    DeleteUserVideos,
    clean_title,
    clean_url,
    to_command,
)
from support import example, new_svix_id, new_user_id, user_event


def published(event: dict[str, Any], received_at: int = 1_700_000_000_000) -> PublishedEvent:
    return PublishedEvent.model_validate(
        {"svixId": new_svix_id(), "receivedAt": received_at, "event": event}
    )


class TestTitle:
    def test_surrounding_whitespace_is_removed(self) -> None:
        assert clean_title("  My  talk \n") == "My  talk"

    @pytest.mark.parametrize("blank", ["", " ", "\t\n  "])
    def test_blank_is_refused(self, blank: str) -> None:
        with pytest.raises(ValueError, match="blank"):
            clean_title(blank)

    def test_200_characters_after_stripping_are_accepted(self) -> None:
        assert clean_title(f"  {'x' * 200}  ") == "x" * 200

    def test_201_characters_are_refused(self) -> None:
        with pytest.raises(ValueError, match="at most 200"):
            clean_title("x" * 201)

    def test_one_character_is_enough(self) -> None:
        assert clean_title("a") == "a"


class TestUrl:
    @pytest.mark.parametrize(
        "url",
        [
            "http://example.com",
            "https://example.com/watch?v=abc#t=10",
            "HTTPS://Example.COM/a",
            "https://user@example.com:8443/p",
            "http://127.0.0.1/x",
            "http://[::1]:8080/",
        ],
    )
    def test_absolute_http_urls_are_accepted(self, url: str) -> None:
        assert clean_url(url) == url

    def test_surrounding_whitespace_is_removed(self) -> None:
        assert clean_url(" https://example.com/v ") == "https://example.com/v"

    @pytest.mark.parametrize(
        "url",
        [
            "",
            "example.com/video",
            "/videos/1",
            "//example.com/v",
            "ftp://example.com/v",
            "javascript:alert(1)",
            "mailto:ada@example.com",
            "http://",
            "http:///path",
            "https://:443/",
            "https://exa mple.com/",
            "https://example.com/a\nb",
            "https://example.com:notaport/",
            "http://[::1/",
        ],
    )
    def test_anything_else_is_refused(self, url: str) -> None:
        with pytest.raises(ValueError):
            clean_url(url)

    def test_2048_characters_are_accepted(self) -> None:
        url = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
        assert len(url) == 2048
        assert clean_url(url) == url

    def test_2049_characters_are_refused(self) -> None:
        url = "https://example.com/" + "a" * (2049 - len("https://example.com/"))
        with pytest.raises(ValueError, match="at most 2048"):
            clean_url(url)


class TestVideo:
    def test_a_new_video_is_live_with_no_views(self) -> None:
        doc = domain.new_video(
            video_id="v1", user_id="user_1", title="t", url="https://e.com", now=42
        )
        assert doc == {
            "_id": "v1",
            "userId": "user_1",
            "title": "t",
            "url": "https://e.com",
            "views": 0,
            "createdAt": 42,
            "updatedAt": 42,
            "deletedAt": None,
        }

    def test_ids_are_unique_strings(self) -> None:
        ids = {domain.new_video_id() for _ in range(1000)}
        assert len(ids) == 1000
        assert all(isinstance(i, str) and i for i in ids)

    def test_an_edit_sets_only_title_url_and_updated_at(self) -> None:
        assert domain.edit({"title": "new", "views": 99, "userId": "x"}, now=7) == {
            "title": "new",
            "updatedAt": 7,
        }

    def test_an_edit_without_changes_is_refused(self) -> None:
        with pytest.raises(ValueError):
            domain.edit({}, now=7)

    def test_a_deleted_account_may_not_create(self) -> None:
        domain.ensure_may_create(None)
        with pytest.raises(AccountDeletedError, match="account deleted"):
            domain.ensure_may_create(1_700_000_000_000)


class TestUserEvents:
    def test_user_deleted_deletes_the_users_videos_at_the_envelope_time(self) -> None:
        user_id = new_user_id()
        event = user_event("user.deleted", user_id, updated_at=1_776_263_400_000)
        assert to_command(published(event)) == DeleteUserVideos(user_id, 1_776_263_400_000)

    def test_without_a_timestamp_the_receipt_time_is_used(self) -> None:
        event = user_event("user.deleted", "user_abc", updated_at=1)
        del event["timestamp"]
        command = to_command(published(event, received_at=1_700_000_000_123))
        assert command == DeleteUserVideos("user_abc", 1_700_000_000_123)

    @pytest.mark.parametrize(
        "name", ["user.created", "user.updated", "session.created", "subscription.created"]
    )
    def test_other_events_are_none_of_ours(self, name: str) -> None:
        assert to_command(published(example(name))) is None

    def test_a_deletion_without_a_user_id_is_poison(self) -> None:
        event = user_event("user.deleted", "user_abc", updated_at=1)
        del event["data"]["id"]
        with pytest.raises(ValidationError):
            to_command(published(event))

    def test_a_deletion_of_something_else_than_a_user_id_is_poison(self) -> None:
        event = user_event("user.deleted", "org_abc", updated_at=1)
        with pytest.raises(ValidationError):
            to_command(published(event))

    def test_a_deletion_that_says_not_deleted_is_poison(self) -> None:
        event = user_event("user.deleted", "user_abc", updated_at=1)
        event["data"]["deleted"] = False
        with pytest.raises(PoisonMessageError):
            to_command(published(event))
