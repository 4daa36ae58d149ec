"""How videos are stored: collections, the filters every query uses, and the indexes serving them.

`videos`: one document per video, `_id` a string, `createdAt` / `updatedAt` / `deletedAt` in ms
since the epoch; `deletedAt` is null while the video is live (always present, so the list index
covers it). `deleted_users`: one tombstone per deleted Clerk user,
`{_id: userId, deletedAt, appliedAt}` (Clerk's deletion time, and when this service first
applied it).
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

VIDEOS = "videos"
DELETED_USERS = "deleted_users"

#: The list (newest first) and the deletion cascade: userId and deletedAt by equality, then
#: createdAt (sorted, or a range) with `_id` as the tie-break of the keyset order.
LIVE_BY_USER_INDEX = "userId_deletedAt_createdAt_id"
LIVE_BY_USER_KEYS = [
    ("userId", ASCENDING),
    ("deletedAt", ASCENDING),
    ("createdAt", DESCENDING),
    ("_id", DESCENDING),
]
#: MongoDB's own `_id` index serves single-video reads and writes and tombstone lookups.
ID_INDEX = "_id_"

SORT_FIELD = "createdAt"
NEWEST_FIRST = [(SORT_FIELD, DESCENDING), ("_id", DESCENDING)]


def live_videos_of(user_id: str) -> dict[str, Any]:
    return {"userId": user_id, "deletedAt": None}


def live_video(video_id: str, user_id: str) -> dict[str, Any]:
    """One live video of `user_id`: another user's, or a deleted one, matches nothing."""
    return {"_id": video_id, "userId": user_id, "deletedAt": None}


def deleted_with_user(user_id: str, cutoff: int) -> dict[str, Any]:
    """The live videos a user's deletion removes: those created up to `cutoff`."""
    return {"userId": user_id, "deletedAt": None, "createdAt": {"$lte": cutoff}}


def tombstone(user_id: str) -> dict[str, Any]:
    return {"_id": user_id}


async def create_indexes(db: AsyncDatabase[Any]) -> None:
    await db[VIDEOS].create_index(LIVE_BY_USER_KEYS, name=LIVE_BY_USER_INDEX)
