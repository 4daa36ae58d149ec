"""The read side: the caller's videos and splats and the deleted-account check, and what the
videos worker reads of splats, each served by an index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.pagination import CursorCodec, Page, PageParams, paginate
from siteview_videos.schema import (
    DELETED_USERS,
    SORT_FIELD,
    SPLATS,
    VIDEOS,
    cancels_unpublished,
    jobs_unpublished,
    live_splat,
    live_splats_of_video,
    live_video,
    live_videos_of,
    open_splats_of,
    stalled,
    tombstone,
)
from siteview_videos.views import SplatView, VideoView

#: Most splats one outbox or timeout round handles; the next round takes the rest.
SWEEP_BATCH = 500


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


def splat_list_scope(user_id: str, video_id: str) -> str:
    """Cursors are signed for one video's splat list of one user."""
    return f"splats:{user_id}:{video_id}"


class SplatQueries:
    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._splats = db[SPLATS]

    async def get(self, splat_id: str, user_id: str) -> dict[str, Any] | None:
        """The caller's live splat."""
        doc: dict[str, Any] | None = await self._splats.find_one(live_splat(splat_id, user_id))
        return doc

    async def get_any(self, splat_id: str, user_id: str) -> dict[str, Any] | None:
        """The caller's splat, deleted or not (what an Idempotency-Key finds again)."""
        doc: dict[str, Any] | None = await self._splats.find_one(
            {"_id": splat_id, "userId": user_id}
        )
        return doc

    async def page(
        self, video_id: str, user_id: str, params: PageParams, codec: CursorCodec
    ) -> Page[SplatView]:
        """One page of a video's live splats, newest first."""
        return await paginate(
            self._splats,
            base_filter=live_splats_of_video(video_id, user_id),
            sort_field=SORT_FIELD,
            params=params,
            codec=codec,
            scope=splat_list_scope(user_id, video_id),
            shape=SplatView.from_doc,
        )

    async def count_open(self, user_id: str) -> int:
        """The user's splats that are queued or processing."""
        return await self._splats.count_documents(open_splats_of(user_id))

    async def by_ids(self, splat_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The splats of `splat_ids` that exist (deleted ones too), by id."""
        if not splat_ids:
            return {}
        docs = self._splats.find({"_id": {"$in": list(splat_ids)}})
        return {doc["_id"]: doc async for doc in docs}

    async def stalled(self, since: int) -> list[dict[str, Any]]:
        """Open splats unchanged since `since` (ms), oldest change first."""
        return await self._oldest(stalled(since), "updatedAt")

    async def jobs_unpublished(self, before: int) -> list[dict[str, Any]]:
        """Queued splats requested up to `before` whose job was not acknowledged."""
        return await self._oldest(jobs_unpublished(before), "createdAt")

    async def cancels_unpublished(
        self, before: int, scope: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Splats (of `scope`, else any) owing the pipeline a cancellation since `before`."""
        return await self._oldest({**cancels_unpublished(before), **(scope or {})}, "cancelledAt")

    async def _oldest(self, query: dict[str, Any], field: str) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = (
            await self._splats.find(query).sort(field, 1).limit(SWEEP_BATCH).to_list()
        )
        return docs
