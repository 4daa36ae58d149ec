"""The videos service's composition roots: one per process type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.events import Topics
from siteview_common.runtime import Runtime, api_app, worker_app
from siteview_videos import domain, handlers
from siteview_videos.entrypoints import live, splats
from siteview_videos.entrypoints.http import router
from siteview_videos.queries import SplatQueries, VideoQueries
from siteview_videos.repository import SplatRepository, VideoRepository
from siteview_videos.schema import create_indexes
from siteview_videos.settings import VideosSettings

GROUP = "videos-service"
#: The consumer group of the pipeline's splat status reports.
SPLATS_GROUP = "videos-splats"


def worker_splats(runtime: Runtime) -> handlers.Splats:
    """The splat use cases in a worker: jobs and cancellations go out through its broker."""

    async def publish(topic: str, value: bytes, key: bytes) -> None:
        await runtime.broker.publish(value, topic, key=key)

    return handlers.Splats(
        SplatRepository(runtime.db), SplatQueries(runtime.db), handlers.SplatJobs(publish)
    )


async def subscribe(runtime: Runtime) -> None:
    """Indexes, then the `user.deleted` cascade on the users topic (videos, then splats): the
    part of the worker a replay of the users topic rebuilds."""
    await create_indexes(runtime.db)
    repo = VideoRepository(runtime.db)
    runtime.consume(
        Topics.USERS,
        group=GROUP,
        parse=handlers.parse,
        apply=partial(handlers.apply_user_events, repo=repo, splats=worker_splats(runtime)),
        changes=domain.touched,
    )


def worker_setup(settings: VideosSettings) -> Callable[[Runtime], Awaitable[None]]:
    """The worker's setup: `subscribe`, the pipeline's status reports, and on timers the
    outbox (jobs and cancellations not yet published) and the timeout sweep."""

    async def setup(runtime: Runtime) -> None:
        await subscribe(runtime)
        splats = worker_splats(runtime)
        notify = runtime.change_notices().publish
        runtime.consume(
            Topics.SPLAT_STATUS,
            group=SPLATS_GROUP,
            decode=handlers.decode_status,
            apply=partial(handlers.apply_reports, splats=splats, notify=notify),
        )
        runtime.every(
            settings.splats_outbox_seconds,
            partial(handlers.flush_outbox, splats, grace_seconds=settings.splats_outbox_seconds),
            name="splat-outbox",
        )
        runtime.every(
            settings.splats_sweep_seconds,
            partial(
                handlers.sweep_timeouts,
                splats,
                timeout_seconds=settings.splats_timeout_seconds,
                notify=notify,
            ),
            name="splat-timeouts",
        )

    return setup


def create_worker(settings: VideosSettings) -> FastAPI:
    return worker_app("videos-worker", settings, worker_setup(settings))


def create_api(settings: VideosSettings) -> FastAPI:
    async def setup(app: FastAPI, db: AsyncDatabase[Any]) -> None:
        await create_indexes(db)
        app.state.videos = VideoRepository(db)
        app.state.video_queries = VideoQueries(db)
        producer = splats.JobProducer(settings, client_id="videos-api")
        app.state.splat_producer = producer  # closed by the splats router's lifespan
        app.state.splats = handlers.Splats(
            SplatRepository(db), SplatQueries(db), handlers.SplatJobs(producer.publish)
        )
        app.state.splat_limit = settings.splats_max_open_per_user

    return api_app(
        "videos-api",
        settings,
        routers=[live.router, splats.router, router],
        publishes_changes=True,
        setup=setup,
        description=(
            "The caller's videos: add, list, edit, delete and count views; and their 3D "
            "splats: request, follow, read and delete."
        ),
    )
