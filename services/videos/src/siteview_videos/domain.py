"""The videos service's rules, as pure functions: what a valid video is, and what a Clerk user
event means for a user's videos.

Deletion is soft: a deleted video keeps its document with `deletedAt` set and answers 404
everywhere. A Clerk user's deletion is final: their live videos are soft-deleted and a tombstone
(the user id, Clerk's deletion time and when this service first applied it) stays behind. The
tombstone refuses new videos from that account, and bounds every replay of the deletion to
videos created up to `cascade_cutoff`, so a replay never reaches a video the first application
could not have seen.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from siteview_common.changes import Change
from siteview_common.events import USER_DELETED, PublishedEvent, user_deletion

MAX_TITLE_LENGTH = 200
MAX_URL_LENGTH = 2048
URL_SCHEMES = frozenset({"http", "https"})


class VideoNotFoundError(LookupError):
    """No live video with this id belongs to the caller (whether it exists is not revealed)."""


class AccountDeletedError(PermissionError):
    """The caller's Clerk account was deleted: it may not add videos any more."""


def now_ms() -> int:
    return int(time.time() * 1000)


def new_video_id() -> str:
    return uuid.uuid4().hex


def clean_title(value: str) -> str:
    """The title without surrounding whitespace: 1 to 200 characters."""
    title = value.strip()
    if not title:
        raise ValueError("title must not be blank")
    if len(title) > MAX_TITLE_LENGTH:
        raise ValueError(f"title must be at most {MAX_TITLE_LENGTH} characters")
    return title


def clean_url(value: str) -> str:
    """The URL without surrounding whitespace: absolute http(s) with a host, ≤ 2048 characters."""
    url = value.strip()
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"url must be at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ValueError("url must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise ValueError("url is not a valid URL") from exc
    if parts.scheme.lower() not in URL_SCHEMES or not parts.hostname:
        raise ValueError("url must be an absolute http or https URL")
    return url


def new_video(*, video_id: str, user_id: str, title: str, url: str, now: int) -> dict[str, Any]:
    """The stored document of a new, live video."""
    return {
        "_id": video_id,
        "userId": user_id,
        "title": title,
        "url": url,
        "views": 0,
        "createdAt": now,
        "updatedAt": now,
        "deletedAt": None,
    }


def edit(changes: dict[str, Any], *, now: int) -> dict[str, Any]:
    """The fields an edit sets: the changed title and/or url, and `updatedAt`."""
    allowed = {k: v for k, v in changes.items() if k in ("title", "url")}
    if not allowed:
        raise ValueError("an edit changes the title, the url or both")
    return {**allowed, "updatedAt": now}


def ensure_may_create(account_deleted_at: int | None) -> None:
    """A deleted account adds no videos."""
    if account_deleted_at is not None:
        raise AccountDeletedError("account deleted")


@dataclass(frozen=True, slots=True)
class DeleteUserVideos:
    """Close the user's account and soft-delete their live videos (see `cascade_cutoff`)."""

    user_id: str
    deleted_at: int


def to_command(published: PublishedEvent) -> DeleteUserVideos | None:
    """The command a published event asks of this service, or None if it is none of ours: only
    `user.deleted` is (a deletion without a user id can never apply, so it is poison)."""
    if published.event.type != USER_DELETED:
        return None
    deletion = user_deletion(published)
    return DeleteUserVideos(user_id=deletion.user_id, deleted_at=deletion.deleted_at)


def cascade_cutoff(deleted_at: int, first_applied_at: int | None) -> int:
    """Up to when a user's videos are removed: Clerk's deletion time, or, when the deletion
    reached this service later, the moment it first did. Videos created in between (a session
    token outlives its user by up to a minute, and the worker may lag) go too; after that
    moment the tombstone refuses new videos, so a replay has nothing newer to touch."""
    return max(deleted_at, first_applied_at or deleted_at)


def touched(commands: Sequence[DeleteUserVideos]) -> list[Change]:
    """A deleted user's cascade changes their list; which videos it removed is not read back
    (`ids` is empty: any of the user's videos)."""
    return [Change(c.user_id, "videos") for c in commands]


def video_changed(user_id: str, video_id: str) -> Change:
    """One of the API's own writes: created, edited, deleted or viewed."""
    return Change(user_id, "videos", video_id)
