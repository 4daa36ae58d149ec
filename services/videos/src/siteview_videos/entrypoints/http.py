from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from siteview_common.deps import ChangeNotices, CurrentUser, Cursors, Pagination
from siteview_common.pagination import Page
from siteview_videos import handlers
from siteview_videos.domain import (
    AccountDeletedError,
    VideoNotFoundError,
    splat_changed,
    video_changed,
)
from siteview_videos.handlers import Splats
from siteview_videos.queries import VideoQueries
from siteview_videos.repository import VideoRepository
from siteview_videos.views import NewVideo, VideoChanges, VideoView, ViewCount

router = APIRouter(prefix="/videos", tags=["videos"])

NOT_FOUND = HTTPException(404, "video not found")
RESPONSES: dict[int | str, dict[str, str]] = {
    401: {"description": "missing or invalid session token"},
    404: {"description": "no such video, deleted, or not the caller's"},
}
#: Routes with a JSON body: a body that is not JSON at all is refused before validation.
UNPARSABLE: dict[int | str, dict[str, str]] = {400: {"description": "the body is not JSON"}}


async def repository(request: Request) -> VideoRepository:
    repo: VideoRepository = request.app.state.videos
    return repo


async def read_side(request: Request) -> VideoQueries:
    queries: VideoQueries = request.app.state.video_queries
    return queries


async def splat_side(request: Request) -> Splats:
    splats: Splats = request.app.state.splats
    return splats


Videos = Annotated[VideoRepository, Depends(repository)]
Queries = Annotated[VideoQueries, Depends(read_side)]
SplatsDep = Annotated[Splats, Depends(splat_side)]


@router.post(
    "",
    status_code=201,
    response_model=VideoView,
    responses={
        **UNPARSABLE,
        401: RESPONSES[401],
        403: {"description": "the caller's account was deleted"},
    },
)
async def create_video(
    body: NewVideo,
    user: CurrentUser,
    repo: Videos,
    queries: Queries,
    notices: ChangeNotices,
    response: Response,
) -> VideoView:
    """Add a video for the caller."""
    try:
        doc = await handlers.create_video(
            user.user_id, title=body.title, url=body.url, repo=repo, queries=queries
        )
    except AccountDeletedError:
        raise HTTPException(403, "account deleted") from None
    notices.publish_soon([video_changed(user.user_id, doc["_id"])])
    response.headers["Location"] = f"/videos/{doc['_id']}"
    return VideoView.from_doc(doc)


@router.get(
    "",
    response_model=Page[VideoView],
    responses={
        400: {"description": "the cursor was altered or is another list's"},
        401: RESPONSES[401],
    },
)
async def list_videos(
    user: CurrentUser, page: Pagination, cursors: Cursors, queries: Queries
) -> Page[VideoView]:
    """The caller's live videos, newest first, one page at a time."""
    return await handlers.list_videos(user.user_id, page, queries=queries, codec=cursors)


@router.get("/{video_id}", response_model=VideoView, responses=RESPONSES)
async def get_video(video_id: str, user: CurrentUser, queries: Queries) -> VideoView:
    """One of the caller's videos."""
    try:
        return VideoView.from_doc(await handlers.get_video(video_id, user.user_id, queries))
    except VideoNotFoundError:
        raise NOT_FOUND from None


@router.patch("/{video_id}", response_model=VideoView, responses={**UNPARSABLE, **RESPONSES})
async def update_video(
    video_id: str, body: VideoChanges, user: CurrentUser, repo: Videos, notices: ChangeNotices
) -> VideoView:
    """Change the title and/or url of one of the caller's videos."""
    try:
        doc = await handlers.update_video(video_id, user.user_id, body.fields(), repo=repo)
    except VideoNotFoundError:
        raise NOT_FOUND from None
    notices.publish_soon([video_changed(user.user_id, video_id)])
    return VideoView.from_doc(doc)


@router.delete("/{video_id}", status_code=204, responses=RESPONSES)
async def delete_video(
    video_id: str, user: CurrentUser, repo: Videos, splats: SplatsDep, notices: ChangeNotices
) -> Response:
    """Delete one of the caller's videos (it answers 404 from then on) and its splats (those
    not finished are cancelled)."""
    try:
        await handlers.delete_video(video_id, user.user_id, repo=repo, splats=splats)
    except VideoNotFoundError:
        raise NOT_FOUND from None
    notices.publish_soon([video_changed(user.user_id, video_id), splat_changed(user.user_id)])
    return Response(status_code=204)


@router.post("/{video_id}/views", response_model=ViewCount, responses=RESPONSES)
async def record_view(
    video_id: str, user: CurrentUser, repo: Videos, notices: ChangeNotices
) -> ViewCount:
    """Count one view of one of the caller's videos; the new total."""
    try:
        views = await handlers.record_view(video_id, user.user_id, repo=repo)
    except VideoNotFoundError:
        raise NOT_FOUND from None
    notices.publish_soon([video_changed(user.user_id, video_id)])
    return ViewCount(views=views)
