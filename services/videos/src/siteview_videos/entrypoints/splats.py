"""The splat routes: request a splat of one of the caller's videos, list a video's splats (also
as a live stream), read and delete one. A router of its own (http.py holds the videos'
routes), with the producer its requests publish their jobs through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Response

from siteview_common.deps import (
    ChangeNotices,
    CurrentUser,
    Cursors,
    FirstPage,
    LiveUser,
    Pagination,
)
from siteview_common.kafka import start_producer
from siteview_common.live import LiveResponse, encode, live_response, live_responses
from siteview_common.pagination import Page
from siteview_videos import handlers
from siteview_videos.domain import (
    AccountDeletedError,
    IdempotencyConflictError,
    SplatNotFoundError,
    TooManyOpenSplatsError,
    VideoNotFoundError,
    splat_changed,
)
from siteview_videos.entrypoints.http import NOT_FOUND, UNPARSABLE, Queries, SplatsDep
from siteview_videos.entrypoints.http import RESPONSES as VIDEO_RESPONSES
from siteview_videos.handlers import IdempotencyKeyInUseError, JobQueueUnavailableError
from siteview_videos.settings import VideosSettings
from siteview_videos.views import IDEMPOTENCY_KEY_PATTERN, NewSplat, SplatView

#: What a 429 (too many open splats) tells the client to wait: splats take minutes.
LIMIT_RETRY_AFTER_SECONDS = 60
#: What a 503 (the job could not be published) tells the client to wait.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5


class JobProducer:
    """The API's Kafka producer for the job topic, connected on first use (the API starts and
    serves without Kafka), acks=all; a publish waits for the broker's ack at most
    SPLATS_PUBLISH_TIMEOUT_SECONDS, connecting included."""

    def __init__(self, settings: VideosSettings, *, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def publish(self, topic: str, value: bytes, key: bytes) -> None:
        async with asyncio.timeout(self._settings.splats_publish_timeout_seconds):
            producer = await self._connected()
            await producer.send_and_wait(topic, value, key=key)

    async def _connected(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                self._producer = await start_producer(self._settings, client_id=self._client_id)
            return self._producer

    async def stop(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's own lifespan (whose setup built the producer): closes it last."""
    try:
        yield
    finally:
        producer: JobProducer | None = getattr(app.state, "splat_producer", None)
        if producer is not None:
            await producer.stop()


router = APIRouter(tags=["splats"], lifespan=lifespan)

SPLAT_NOT_FOUND = HTTPException(404, "splat not found")
RESPONSES: dict[int | str, dict[str, str]] = {
    **VIDEO_RESPONSES,
    404: {"description": "no such splat, deleted, or not the caller's"},
}


async def open_limit(request: Request) -> int:
    limit: int = request.app.state.splat_limit
    return limit


OpenLimit = Annotated[int, Depends(open_limit)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description=(
            "1 to 200 printable characters: the same key from the same user answers the "
            "splat its first request made (202, the same body) and never makes a second"
        ),
    ),
]


@router.post(
    "/videos/{video_id}/splats",
    status_code=202,
    response_model=SplatView,
    responses={
        **UNPARSABLE,
        **VIDEO_RESPONSES,
        403: {"description": "the caller's account was deleted"},
        409: {"description": "a request with the same Idempotency-Key is being answered"},
        422: {"description": "an invalid body, or an Idempotency-Key used for another request"},
        429: {"description": "as many of the caller's splats are queued or processing as allowed"},
        503: {"description": "the job could not be published: repeat with the same key"},
    },
)
async def request_splat(
    video_id: str,
    user: CurrentUser,
    splats: SplatsDep,
    videos: Queries,
    limit: OpenLimit,
    notices: ChangeNotices,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    body: NewSplat | None = None,
) -> SplatView:
    """Request a 3D splat of one of the caller's videos: queued, its job on its way to the
    pipeline (`Location: /splats/{id}` follows it)."""
    try:
        doc = await handlers.request_splat(
            user.user_id,
            video_id,
            quality=(body or NewSplat()).quality,
            idempotency_key=idempotency_key,
            splats=splats,
            videos=videos,
            max_open=limit,
        )
    except AccountDeletedError:
        raise HTTPException(403, "account deleted") from None
    except VideoNotFoundError:
        raise NOT_FOUND from None
    except IdempotencyConflictError as exc:
        raise HTTPException(422, str(exc)) from None
    except IdempotencyKeyInUseError:
        raise HTTPException(
            409, "a request with this Idempotency-Key is in progress", {"Retry-After": "1"}
        ) from None
    except TooManyOpenSplatsError as exc:
        retry = {"Retry-After": str(LIMIT_RETRY_AFTER_SECONDS)}
        raise HTTPException(429, str(exc), retry) from None
    except JobQueueUnavailableError:
        retry = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)}
        raise HTTPException(503, "job queue unavailable", retry) from None
    notices.publish_soon([splat_changed(user.user_id, doc["_id"])])
    response.headers["Location"] = f"/splats/{doc['_id']}"
    return SplatView.from_doc(doc)


@router.get(
    "/videos/{video_id}/splats",
    response_model=Page[SplatView],
    responses={
        **VIDEO_RESPONSES,
        400: {"description": "the cursor was altered or is another list's"},
    },
)
async def list_splats(
    video_id: str,
    user: CurrentUser,
    page: Pagination,
    cursors: Cursors,
    splats: SplatsDep,
    videos: Queries,
) -> Page[SplatView]:
    """The splats of one of the caller's videos, newest first, one page at a time."""
    try:
        return await handlers.list_splats(
            video_id, user.user_id, page, queries=splats.queries, videos=videos, codec=cursors
        )
    except VideoNotFoundError:
        raise NOT_FOUND from None


@router.get("/splats/{splat_id}", response_model=SplatView, responses=RESPONSES)
async def get_splat(splat_id: str, user: CurrentUser, splats: SplatsDep) -> SplatView:
    """One of the caller's splats: its status, progress, and result once ready."""
    try:
        return SplatView.from_doc(await handlers.get_splat(splat_id, user.user_id, splats.queries))
    except SplatNotFoundError:
        raise SPLAT_NOT_FOUND from None


@router.delete("/splats/{splat_id}", status_code=204, responses=RESPONSES)
async def delete_splat(
    splat_id: str, user: CurrentUser, splats: SplatsDep, notices: ChangeNotices
) -> Response:
    """Delete one of the caller's splats (it answers 404 from then on); one not finished is
    cancelled."""
    try:
        await handlers.delete_splat(splat_id, user.user_id, splats=splats)
    except SplatNotFoundError:
        raise SPLAT_NOT_FOUND from None
    notices.publish_soon([splat_changed(user.user_id, splat_id)])
    return Response(status_code=204)


@router.get(
    "/videos/{video_id}/splats/live",
    response_class=LiveResponse,
    responses={
        **live_responses(
            "GET /videos/{video_id}/splats?numItems=N's body (the first page), or null once "
            "the video is deleted",
            stream="splats",
            paged=True,
        ),
        404: VIDEO_RESPONSES[404],
    },
)
async def list_splats_live(
    video_id: str,
    request: Request,
    user: LiveUser,
    page: FirstPage,
    cursors: Cursors,
    splats: SplatsDep,
    videos: Queries,
) -> LiveResponse:
    """The first page of one of the caller's videos' splats (`event: splats`), now and
    whenever one was requested, reported on, failed or deleted; `null` once the video is
    deleted."""
    if await videos.get(video_id, user.user_id) is None:
        raise NOT_FOUND

    async def read() -> bytes:
        try:
            return encode(
                await handlers.list_splats(
                    video_id,
                    user.user_id,
                    page,
                    queries=splats.queries,
                    videos=videos,
                    codec=cursors,
                )
            )
        except VideoNotFoundError:
            return encode(None)

    return await live_response(
        request, user_id=user.user_id, collection="splats", stream="splats", read=read
    )
