"""How videos are stored: collections, the filters every query uses, and the indexes serving them.

`videos`: one document per video, `_id` a string, `createdAt` / `updatedAt` / `deletedAt` in ms
since the epoch; `deletedAt` is null while the video is live (always present, so the list index
covers it). `deleted_users`: one tombstone per deleted Clerk user,
`{_id: userId, deletedAt, appliedAt}` (Clerk's deletion time, and when this service first
applied it).

`splats`: one document per splat, `_id` a string of 32 hex digits, `videoId`, `userId`,
`videoUrl` (the video's URL when it was requested), `quality`, `status`, `progress`, `result`,
`error`, `statusAt` (the `at` of the last report applied, -1 before any), `createdAt` /
`updatedAt` / `deletedAt` as for videos, `jobPublishedAt` (null until the broker acknowledged
its job request: the outbox), and `cancelReason` / `cancelledAt` / `cancelPublishedAt` (set
when a splat that was not finished is deleted or timed out: a cancellation owed to the
pipeline until `cancelPublishedAt` is set).
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from siteview_videos.domain import FINAL_STATUSES, OPEN_STATUSES, QUEUED, SplatReport

VIDEOS = "videos"
DELETED_USERS = "deleted_users"
SPLATS = "splats"

SORT_FIELD = "createdAt"
NEWEST_FIRST = [(SORT_FIELD, DESCENDING), ("_id", DESCENDING)]

#: The list (newest first) and the deletion cascade: userId and deletedAt by equality, then
#: createdAt (sorted, or a range) with `_id` as the tie-break of the keyset order.
LIVE_BY_USER_INDEX = "userId_deletedAt_createdAt_id"
LIVE_BY_USER_KEYS = [("userId", ASCENDING), ("deletedAt", ASCENDING), *NEWEST_FIRST]
#: MongoDB's own `_id` index serves single-video reads and writes and tombstone lookups.
ID_INDEX = "_id_"


def live_videos_of(user_id: str) -> dict[str, Any]:
    return {"userId": user_id, "deletedAt": None}


def live_video(video_id: str, user_id: str) -> dict[str, Any]:
    """One live video of `user_id`: another user's, or a deleted one, matches nothing."""
    return {"_id": video_id, "userId": user_id, "deletedAt": None}


def deleted_with_user(user_id: str, cutoff: int) -> dict[str, Any]:
    """The live videos (or splats) a user's deletion removes: those created up to `cutoff`."""
    return {"userId": user_id, "deletedAt": None, "createdAt": {"$lte": cutoff}}


def tombstone(user_id: str) -> dict[str, Any]:
    return {"_id": user_id}


#: A video's splats, newest first (`videoId` is one user's; `userId` is checked besides).
SPLATS_BY_VIDEO_INDEX = "videoId_deletedAt_createdAt_id"
SPLATS_BY_VIDEO_KEYS = [("videoId", ASCENDING), ("deletedAt", ASCENDING), *NEWEST_FIRST]
#: A user's open splats (the request limit) and the user-deletion cascade.
SPLATS_BY_USER_INDEX = "userId_deletedAt_status"
SPLATS_BY_USER_KEYS = [("userId", ASCENDING), ("deletedAt", ASCENDING), ("status", ASCENDING)]
#: The timeout sweep: open splats by their last change.
SPLATS_STALLED_INDEX = "status_updatedAt"
SPLATS_STALLED_KEYS = [("status", ASCENDING), ("updatedAt", ASCENDING)]
#: The outbox: job requests and cancellations not yet published, oldest first.
SPLAT_JOBS_OUTBOX_INDEX = "jobPublishedAt_createdAt"
SPLAT_JOBS_OUTBOX_KEYS = [("jobPublishedAt", ASCENDING), ("createdAt", ASCENDING)]
SPLAT_CANCELS_OUTBOX_INDEX = "cancelPublishedAt_cancelledAt"
SPLAT_CANCELS_OUTBOX_KEYS = [("cancelPublishedAt", ASCENDING), ("cancelledAt", ASCENDING)]


def live_splat(splat_id: str, user_id: str) -> dict[str, Any]:
    """One live splat of `user_id`: another user's, or a deleted one, matches nothing."""
    return {"_id": splat_id, "userId": user_id, "deletedAt": None}


def live_splats_of_video(video_id: str, user_id: str) -> dict[str, Any]:
    return {"videoId": video_id, "userId": user_id, "deletedAt": None}


def unfinished(scope: dict[str, Any]) -> dict[str, Any]:
    """The splats of `scope` that are queued or processing (deleting one owes a cancel)."""
    return {**scope, "status": {"$in": list(OPEN_STATUSES)}}


def open_splats_of(user_id: str) -> dict[str, Any]:
    """The user's live splats that are queued or processing."""
    return unfinished({"userId": user_id, "deletedAt": None})


def finished(scope: dict[str, Any]) -> dict[str, Any]:
    return {**scope, "status": {"$in": list(FINAL_STATUSES)}}


def superseded_by(report: SplatReport) -> dict[str, Any]:
    """The stored splat `report` changes: `domain.supersedes` as a filter."""
    if report.final:
        newer: dict[str, Any] = {"statusAt": {"$lte": report.at}}
    else:
        newer = {
            "$or": [
                {"statusAt": {"$lt": report.at}},
                {"statusAt": report.at, "progress": {"$lt": report.progress}},
            ]
        }
    return unfinished({"_id": report.splat_id, "deletedAt": None, **newer})


def stalled(since: int) -> dict[str, Any]:
    """Live, open splats unchanged since `since` (ms)."""
    return unfinished({"deletedAt": None, "updatedAt": {"$lte": since}})


def unchanged_since_seen(splat: dict[str, Any]) -> dict[str, Any]:
    """`splat` as it was read: still open, live, with the same `updatedAt` (a conditional
    update on it applies once, however many sweepers race for it)."""
    return unfinished({"_id": splat["_id"], "deletedAt": None, "updatedAt": splat["updatedAt"]})


def jobs_unpublished(before: int) -> dict[str, Any]:
    """Live, queued splats whose job request was not acknowledged, requested up to `before`."""
    return {
        "jobPublishedAt": None,
        "createdAt": {"$lte": before},
        "deletedAt": None,
        "status": QUEUED,
    }


def cancels_unpublished(before: int) -> dict[str, Any]:
    """Splats owing the pipeline a cancellation since `before` at the latest."""
    return {
        "cancelPublishedAt": None,
        "cancelledAt": {"$lte": before},
        "cancelReason": {"$ne": None},
    }


async def create_indexes(db: AsyncDatabase[Any]) -> None:
    await db[VIDEOS].create_index(LIVE_BY_USER_KEYS, name=LIVE_BY_USER_INDEX)
    splats = db[SPLATS]
    await splats.create_index(SPLATS_BY_VIDEO_KEYS, name=SPLATS_BY_VIDEO_INDEX)
    await splats.create_index(SPLATS_BY_USER_KEYS, name=SPLATS_BY_USER_INDEX)
    await splats.create_index(SPLATS_STALLED_KEYS, name=SPLATS_STALLED_INDEX)
    await splats.create_index(SPLAT_JOBS_OUTBOX_KEYS, name=SPLAT_JOBS_OUTBOX_INDEX)
    await splats.create_index(SPLAT_CANCELS_OUTBOX_KEYS, name=SPLAT_CANCELS_OUTBOX_INDEX)
