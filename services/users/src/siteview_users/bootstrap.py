"""The users service's composition roots: one per process type."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.events import Topics
from siteview_common.runtime import Runtime, api_app, worker_app
from siteview_users import domain, handlers
from siteview_users.entrypoints import live
from siteview_users.entrypoints.http import router
from siteview_users.repository import UserRepository
from siteview_users.settings import UsersSettings

GROUP = "users-service"


async def subscribe(runtime: Runtime) -> None:
    """The worker's subscriptions: Clerk user events into the users collection."""
    repo = UserRepository(runtime.db)
    await repo.create_indexes()
    runtime.consume(
        Topics.USERS,
        group=GROUP,
        parse=handlers.parse,
        apply=partial(handlers.apply_user_events, repo=repo),
        changes=domain.touched,
    )


def create_worker(settings: UsersSettings) -> FastAPI:
    return worker_app("users-worker", settings, subscribe)


def create_api(settings: UsersSettings) -> FastAPI:
    async def setup(app: FastAPI, db: AsyncDatabase[Any]) -> None:
        repo = UserRepository(db)
        await repo.create_indexes()
        app.state.users = repo

    return api_app(
        "users-api",
        settings,
        routers=[live.router, router],
        setup=setup,
        description="The caller's profile, synced from Clerk's user events.",
    )
