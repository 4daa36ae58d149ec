"""Use cases of the videos service, with their dependencies passed in."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from siteview_common.pagination import CursorCodec, Page, PageParams
from siteview_videos import domain
from siteview_videos.domain import DeleteUserVideos, VideoNotFoundError, to_command
from siteview_videos.queries import VideoQueries
from siteview_videos.repository import VideoRepository
from siteview_videos.views import VideoView

log = logging.getLogger(__name__)

Clock = Callable[[], int]

parse = to_command


async def apply_user_events(
    commands: Sequence[DeleteUserVideos], repo: VideoRepository, now: Clock = domain.now_ms
) -> None:
    deleted = await repo.delete_users(commands, now())
    log.info("deleted users' videos", extra={"users": len(commands), "videos": deleted})


async def create_video(
    user_id: str,
    *,
    title: str,
    url: str,
    repo: VideoRepository,
    queries: VideoQueries,
    now: Clock = domain.now_ms,
) -> dict[str, Any]:
    domain.ensure_may_create(await queries.account_deleted_at(user_id))
    video = domain.new_video(
        video_id=domain.new_video_id(), user_id=user_id, title=title, url=url, now=now()
    )
    await repo.insert(video)
    return video


async def get_video(video_id: str, user_id: str, queries: VideoQueries) -> dict[str, Any]:
    doc = await queries.get(video_id, user_id)
    if doc is None:
        raise VideoNotFoundError(video_id)
    return doc


async def list_videos(
    user_id: str, params: PageParams, *, queries: VideoQueries, codec: CursorCodec
) -> Page[VideoView]:
    return await queries.page(user_id, params, codec)


async def update_video(
    video_id: str,
    user_id: str,
    changes: dict[str, Any],
    *,
    repo: VideoRepository,
    now: Clock = domain.now_ms,
) -> dict[str, Any]:
    doc = await repo.update(video_id, user_id, domain.edit(changes, now=now()))
    if doc is None:
        raise VideoNotFoundError(video_id)
    return doc


async def delete_video(
    video_id: str, user_id: str, *, repo: VideoRepository, now: Clock = domain.now_ms
) -> None:
    if not await repo.soft_delete(video_id, user_id, now()):
        raise VideoNotFoundError(video_id)


async def record_view(video_id: str, user_id: str, *, repo: VideoRepository) -> int:
    views = await repo.add_view(video_id, user_id)
    if views is None:
        raise VideoNotFoundError(video_id)
    return views
