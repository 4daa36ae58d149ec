"""The write side: every change to a video is one single-document (or one bulk) MongoDB write,
guarded by its filter, so concurrent requests never lose an update."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ReturnDocument, UpdateMany, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from siteview_videos.domain import DeleteUserVideos, cascade_cutoff
from siteview_videos.schema import (
    DELETED_USERS,
    VIDEOS,
    deleted_with_user,
    live_video,
    tombstone,
)


class VideoRepository:
    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._videos = db[VIDEOS]
        self._deleted_users = db[DELETED_USERS]

    async def insert(self, video: dict[str, Any]) -> None:
        await self._videos.insert_one(video)

    async def update(
        self, video_id: str, user_id: str, fields: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Set `fields` on the caller's live video; the video after the change, or None."""
        doc: dict[str, Any] | None = await self._videos.find_one_and_update(
            live_video(video_id, user_id),
            {"$set": fields},
            return_document=ReturnDocument.AFTER,
        )
        return doc

    async def soft_delete(self, video_id: str, user_id: str, now: int) -> bool:
        """Mark the caller's live video deleted; False when there was none."""
        result = await self._videos.update_one(
            live_video(video_id, user_id), {"$set": {"deletedAt": now}}
        )
        return result.matched_count == 1

    async def add_view(self, video_id: str, user_id: str) -> int | None:
        """Count one view with a server-side `$inc`; the new count, or None. (No projection:
        a video is small, and FerretDB refuses projections in findAndModify.)"""
        doc = await self._videos.find_one_and_update(
            live_video(video_id, user_id),
            {"$inc": {"views": 1}},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else int(doc["views"])

    async def delete_users(self, commands: Sequence[DeleteUserVideos], now: int) -> int:
        """Tombstone each user (keeping the earliest deletion time and the first time it was
        applied), then soft-delete their live videos up to the cascade cutoff. Idempotent;
        returns how many videos it deleted."""
        if not commands:
            return 0
        await self._deleted_users.bulk_write(
            [
                UpdateOne(
                    tombstone(c.user_id),
                    {"$min": {"deletedAt": c.deleted_at}, "$setOnInsert": {"appliedAt": now}},
                    upsert=True,
                )
                for c in commands
            ],
            ordered=False,
        )
        tombstones = self._deleted_users.find({"_id": {"$in": [c.user_id for c in commands]}})
        cutoffs = {
            t["_id"]: cascade_cutoff(t["deletedAt"], t.get("appliedAt")) async for t in tombstones
        }
        result = await self._videos.bulk_write(
            [
                UpdateMany(
                    deleted_with_user(c.user_id, cutoffs[c.user_id]),
                    {"$set": {"deletedAt": c.deleted_at}},
                )
                for c in commands
            ],
            ordered=False,
        )
        return result.modified_count
