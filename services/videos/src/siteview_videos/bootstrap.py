"""The videos service's composition roots: one per process type."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.events import Topics
from siteview_common.runtime import Runtime, api_app, worker_app
from siteview_videos import domain, handlers
from siteview_videos.entrypoints import live
from siteview_videos.entrypoints.http import router
from siteview_videos.queries import VideoQueries
from siteview_videos.repository import VideoRepository
from siteview_videos.schema import create_indexes
from siteview_videos.settings import VideosSettings

GROUP = "videos-service"


async def subscribe(runtime: Runtime) -> None:
    """The worker's setup: indexes, then the `user.deleted` cascade on the users topic."""
    await create_indexes(runtime.db)
    repo = VideoRepository(runtime.db)
    runtime.consume(
        Topics.USERS,
        group=GROUP,
        parse=handlers.parse,
        apply=partial(handlers.apply_user_events, repo=repo),
        changes=domain.touched,
    )


def create_worker(settings: VideosSettings) -> FastAPI:
    return worker_app("videos-worker", settings, subscribe)


def create_api(settings: VideosSettings) -> FastAPI:
    async def setup(app: FastAPI, db: AsyncDatabase[Any]) -> None:
        await create_indexes(db)
        app.state.videos = VideoRepository(db)
        app.state.video_queries = VideoQueries(db)

    return api_app(
        "videos-api",
        settings,
        routers=[live.router, router],
        publishes_changes=True,
        setup=setup,
        description="The caller's videos: add, list, edit, delete and count views.",
    )
