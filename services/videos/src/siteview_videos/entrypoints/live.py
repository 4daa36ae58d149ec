"""The caller's videos as a live stream: GET /videos/live (see `siteview_common.live`). Its
router goes before the REST one, whose GET /videos/{video_id} would otherwise take `live`."""

from __future__ import annotations

from fastapi import APIRouter, Request

from siteview_common.deps import Cursors, FirstPage, LiveUser
from siteview_common.live import LiveResponse, encode, live_response, live_responses
from siteview_videos import handlers
from siteview_videos.entrypoints.http import Queries

router = APIRouter(prefix="/videos", tags=["videos"])


@router.get(
    "/live",
    response_class=LiveResponse,
    responses=live_responses(
        "GET /videos?numItems=N's body (the first page)", stream="videos", paged=True
    ),
)
async def list_videos_live(
    request: Request, user: LiveUser, page: FirstPage, cursors: Cursors, queries: Queries
) -> LiveResponse:
    """The first page of the caller's live videos (`event: videos`), now and whenever one was
    added, edited, deleted or viewed."""

    async def read() -> bytes:
        return encode(
            await handlers.list_videos(user.user_id, page, queries=queries, codec=cursors)
        )

    return await live_response(
        request, user_id=user.user_id, collection="videos", stream="videos", read=read
    )
