"""The write side: every change to a video or a splat is one single-document (or one bulk)
MongoDB write, guarded by its filter, so concurrent requests never lose an update."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ReturnDocument, UpdateMany, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from siteview_common.writes import bulk_write_unordered
from siteview_videos import domain
from siteview_videos.domain import DeleteUserVideos, SplatReport, cascade_cutoff
from siteview_videos.schema import (
    DELETED_USERS,
    SPLATS,
    VIDEOS,
    deleted_with_user,
    finished,
    live_splat,
    live_splats_of_video,
    live_video,
    superseded_by,
    tombstone,
    unchanged_since_seen,
    unfinished,
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
        await bulk_write_unordered(
            self._deleted_users,
            [
                UpdateOne(
                    tombstone(c.user_id),
                    {"$min": {"deletedAt": c.deleted_at}, "$setOnInsert": {"appliedAt": now}},
                    upsert=True,
                )
                for c in commands
            ],
        )
        cutoffs = await cascade_cutoffs(self._deleted_users, [c.user_id for c in commands])
        return await bulk_write_unordered(
            self._videos,
            [
                UpdateMany(
                    deleted_with_user(c.user_id, cutoffs[c.user_id]),
                    {"$set": {"deletedAt": c.deleted_at}},
                )
                for c in commands
            ],
        )


async def cascade_cutoffs(
    deleted_users: AsyncCollection[Any], user_ids: Sequence[str]
) -> dict[str, int]:
    """Each tombstoned user's cascade cutoff (`domain.cascade_cutoff`)."""
    tombstones = deleted_users.find({"_id": {"$in": list(user_ids)}})
    return {t["_id"]: cascade_cutoff(t["deletedAt"], t.get("appliedAt")) async for t in tombstones}


class SplatRepository:
    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._splats = db[SPLATS]
        self._deleted_users = db[DELETED_USERS]

    async def insert(self, splat: dict[str, Any]) -> bool:
        """Store a new splat; False when its `_id` exists (the same Idempotency-Key)."""
        try:
            await self._splats.insert_one(splat)
        except DuplicateKeyError:
            return False
        return True

    async def withdraw(self, splat_id: str) -> None:
        """Remove a splat its request refused after storing it (never answered, never
        published)."""
        await self._splats.delete_one({"_id": splat_id, "jobPublishedAt": None})

    async def mark_jobs_published(self, splat_ids: Sequence[str], now: int) -> None:
        await self._splats.update_many(
            {"_id": {"$in": list(splat_ids)}, "jobPublishedAt": None},
            {"$set": {"jobPublishedAt": now}},
        )

    async def mark_cancels_published(self, splat_ids: Sequence[str], now: int) -> None:
        await self._splats.update_many(
            {"_id": {"$in": list(splat_ids)}, "cancelPublishedAt": None},
            {"$set": {"cancelPublishedAt": now}},
        )

    async def soft_delete(self, splat_id: str, user_id: str, now: int) -> dict[str, Any] | None:
        """Mark the caller's live splat deleted (owing a cancellation when it was not
        finished); the splat after the change, or None when there was none."""
        scope = live_splat(splat_id, user_id)
        doc: dict[str, Any] | None = await self._splats.find_one_and_update(
            unfinished(scope),
            {"$set": {"deletedAt": now, **domain.cancellation("deleted", now)}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:  # finished, or none: a finished splat stays finished
            doc = await self._splats.find_one_and_update(
                finished(scope), {"$set": {"deletedAt": now}}, return_document=ReturnDocument.AFTER
            )
        return doc

    async def delete_video_splats(self, video_id: str, user_id: str, now: int) -> int:
        """Soft-delete the live splats of a deleted video, owing a cancellation for each one
        not finished. Idempotent; returns how many it deleted."""
        scope = live_splats_of_video(video_id, user_id)
        return await self._delete([(scope, now)], domain.cancellation("video_deleted", now))

    async def delete_users(self, commands: Sequence[DeleteUserVideos], now: int) -> int:
        """Soft-delete the splats of users Clerk deleted (after `VideoRepository.delete_users`
        tombstoned them: the same cutoff bounds a replay), owing a cancellation for each one
        not finished. Idempotent; returns how many it deleted."""
        if not commands:
            return 0
        cutoffs = await cascade_cutoffs(self._deleted_users, [c.user_id for c in commands])
        scopes = [
            (deleted_with_user(c.user_id, cutoffs[c.user_id]), c.deleted_at)
            for c in commands
            if c.user_id in cutoffs
        ]
        return await self._delete(scopes, domain.cancellation("user_deleted", now))

    async def _delete(
        self, scopes: Sequence[tuple[dict[str, Any], int]], cancel: dict[str, Any]
    ) -> int:
        """For each (filter, deletion time): the unfinished splats get `cancel` too."""
        if not scopes:
            return 0
        writes: list[UpdateMany] = []
        for scope, deleted_at in scopes:
            writes.append(
                UpdateMany(unfinished(scope), {"$set": {"deletedAt": deleted_at, **cancel}})
            )
            writes.append(UpdateMany(finished(scope), {"$set": {"deletedAt": deleted_at}}))
        return await bulk_write_unordered(self._splats, writes)

    async def apply_reports(self, reports: Sequence[SplatReport], now: int) -> int:
        """Apply each report whose splat it supersedes (one unordered write); how many did."""
        if not reports:
            return 0
        return await bulk_write_unordered(
            self._splats,
            [UpdateOne(superseded_by(r), {"$set": domain.reported(r, now)}) for r in reports],
        )

    async def fail_stalled(self, splat: dict[str, Any], now: int, timeout_seconds: float) -> bool:
        """Fail `splat` for a timeout if it is still as it was read: True for the one sweeper
        that did."""
        result = await self._splats.update_one(
            unchanged_since_seen(splat), {"$set": domain.timed_out(now, timeout_seconds)}
        )
        return result.modified_count == 1
