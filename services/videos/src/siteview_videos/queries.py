"""The read side: the caller's videos and the deleted-account check, each served by an index."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.pagination import CursorCodec, Page, PageParams, paginate
from siteview_videos.schema import (
    DELETED_USERS,
    SORT_FIELD,
    VIDEOS,
    live_video,
    live_videos_of,
    tombstone,
)
from siteview_videos.views import VideoView


def list_scope(user_id: str) -> str:
    """Cursors are signed for one user's list: anyone else's cursor is refused."""
    return f"videos:{user_id}"


class VideoQueries:
    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._videos = db[VIDEOS]
        self._deleted_users = db[DELETED_USERS]

    async def get(self, video_id: str, user_id: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = await self._videos.find_one(live_video(video_id, user_id))
        return doc

    async def page(self, user_id: str, params: PageParams, codec: CursorCodec) -> Page[VideoView]:
        """One page of the user's live videos, newest first (`InvalidCursorError` on a bad
        cursor)."""
        return await paginate(
            self._videos,
            base_filter=live_videos_of(user_id),
            sort_field=SORT_FIELD,
            params=params,
            codec=codec,
            scope=list_scope(user_id),
            shape=VideoView.from_doc,
        )

    async def account_deleted_at(self, user_id: str) -> int | None:
        """When the user's Clerk account was deleted, or None while it exists."""
        doc = await self._deleted_users.find_one(tombstone(user_id))
        return None if doc is None else int(doc["deletedAt"])
