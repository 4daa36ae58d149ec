"""The payments service's composition roots: one per process type."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.events import Topics
from siteview_common.runtime import Runtime, api_app, worker_app
from siteview_payments import domain, handlers
from siteview_payments.entrypoints import live
from siteview_payments.entrypoints.http import payments_router, subscriptions_router
from siteview_payments.repository import PaymentsRepository
from siteview_payments.settings import PaymentsSettings

GROUP = "payments-service"


async def consume_billing(runtime: Runtime) -> PaymentsRepository:
    """The worker's setup: indexes, then the billing topic's batches into the repository."""
    repo = PaymentsRepository(runtime.db)
    await repo.create_indexes()
    runtime.consume(
        Topics.BILLING,
        group=GROUP,
        parse=handlers.parse,
        apply=partial(handlers.apply_billing_events, repo=repo),
        changes=domain.touched,
    )
    return repo


def create_worker(settings: PaymentsSettings) -> FastAPI:
    return worker_app("payments-worker", settings, consume_billing)


def create_api(settings: PaymentsSettings) -> FastAPI:
    async def setup(app: FastAPI, db: AsyncDatabase[Any]) -> None:
        repo = PaymentsRepository(db)
        await repo.create_indexes()
        app.state.payments = repo

    return api_app(
        "payments-api",
        settings,
        routers=[
            live.payments_router,
            live.subscriptions_router,
            payments_router,
            subscriptions_router,
        ],
        setup=setup,
        description="The caller's payment attempts and subscriptions, synced from Clerk Billing.",
    )
