"""Composition helpers: each process's root builds its clients here, inside the running loop.

`worker_app` and `api_app` return FastAPI apps whose lifespan opens MongoDB (refusing the dev
stand-in outside development) and, for workers, the Kafka broker with its batch subscribers.
Both serve `/healthz`, `/readyz` and `/metrics`; the API adds the service's routers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.auth import ClerkTokenVerifier
from siteview_common.consumer import Apply, BatchProcessor, EventLedger, Parse, RedeliveryPolicy
from siteview_common.events import Topics
from siteview_common.kafka import CONSUMER_OPTIONS, all_topics, ensure_topics, make_broker
from siteview_common.mongo import check_server, make_mongo_client, ping
from siteview_common.pagination import CursorCodec
from siteview_common.settings import (
    ClerkAuthSettings,
    DeliverySettings,
    KafkaSettings,
    MongoSettings,
    PaginationSettings,
)
from siteview_common.webapp import create_app

log = logging.getLogger(__name__)


class WorkerSettings(KafkaSettings, MongoSettings, DeliverySettings):
    """A consuming service: its broker, its own database (MONGODB_DATABASE) and how it
    redelivers failed batches (WORKER_*)."""

    mongodb_database: str = "app"


class ServiceSettings(WorkerSettings, ClerkAuthSettings):
    """A consuming service's settings, shared by its api and worker processes."""


class Runtime:
    """What a worker's setup gets: the database and a way to subscribe."""

    def __init__(self, settings: WorkerSettings, mongo: AsyncMongoClient[Any], broker: KafkaBroker):
        self.settings = settings
        self.mongo = mongo
        self.db: AsyncDatabase[Any] = mongo[settings.mongodb_database]
        self.broker = broker
        self.ledger = EventLedger(self.db["processed_events"])
        #: The topics subscribed to, with their dead-letter topics: created at start.
        self.topics: list[str] = []

    def consume(self, topic: str, *, group: str, parse: Parse[Any], apply: Apply[Any]) -> None:
        """Batches of `topic` in consumer group `group`; offsets commit only after `apply`.
        A failed batch is rewound and redelivered after a back-off (`BatchProcessor.handle`):
        for as long as the failure is transient, else until its culprits are dead-lettered."""
        processor = BatchProcessor(
            group=group,
            broker=self.broker,
            ledger=self.ledger,
            parse=parse,
            apply=apply,
            policy=RedeliveryPolicy.from_settings(self.settings),
        )
        self.topics += [topic, Topics.dlq(topic)]

        async def handle(message: KafkaMessage) -> None:
            raw = message.raw_message
            records = list(raw) if isinstance(raw, (list, tuple)) else [raw]
            await processor.handle(records)

        self.broker.subscriber(
            topic,
            group_id=group,
            batch=True,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            **CONSUMER_OPTIONS,
        )(handle)


async def _open_mongo(
    settings: MongoSettings, appname: str, *, bounded: bool = False
) -> AsyncMongoClient[Any]:
    """A client whose server is checked (the stand-in is refused outside development);
    `bounded`: every operation within MONGODB_TIMEOUT_SECONDS (see `make_mongo_client`)."""
    client = make_mongo_client(settings, bounded=bounded, appname=appname)
    try:
        await check_server(client, settings)
    except BaseException:
        await client.close()
        raise
    return client


def worker_app(
    name: str, settings: WorkerSettings, setup: Callable[[Runtime], Awaitable[object]]
) -> FastAPI:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        mongo = await _open_mongo(settings, name)
        broker = make_broker(settings, client_id=name)
        try:
            runtime = Runtime(settings, mongo, broker)
            await setup(runtime)
            await ensure_topics(settings, [*all_topics(), *runtime.topics])
            await runtime.ledger.create_indexes()
            await broker.start()
            state.update(mongo=mongo, broker=broker)
            log.info("worker started", extra={"database": settings.mongodb_database})
            yield
        finally:
            state.clear()
            await broker.stop()
            await mongo.close()

    async def mongo_ready() -> bool:
        return "mongo" in state and await ping(state["mongo"])

    async def broker_ready() -> bool:
        return "broker" in state and bool(await state["broker"].ping(timeout=2.0))

    return create_app(
        title=name,
        settings=settings,
        lifespan=lifespan,
        checks={"database": mongo_ready, "broker": broker_ready},
    )


def api_app(
    name: str,
    settings: ServiceSettings,
    *,
    routers: Sequence[APIRouter],
    setup: Callable[[FastAPI, AsyncDatabase[Any]], Awaitable[None]],
    description: str = "",
) -> FastAPI:
    """An authenticated API process. The session-token verifier (and, for settings with a
    cursor secret, the cursor codec) are built here, MongoDB is opened in the lifespan, and
    `setup` puts the service's read side on `app.state` for its routes' dependencies. Every
    database operation ends within MONGODB_TIMEOUT_SECONDS; one that fails because the
    database is unavailable answers 503 (see `webapp`)."""
    state: dict[str, Any] = {}
    verifier = ClerkTokenVerifier.from_settings(settings)
    codec = (
        CursorCodec(settings.cursor_signing_secret)
        if isinstance(settings, PaginationSettings)
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mongo = await _open_mongo(settings, name, bounded=True)
        app.state.verifier = verifier
        app.state.cursor_codec = codec
        try:
            await setup(app, mongo[settings.mongodb_database])
            state["mongo"] = mongo
            yield
        finally:
            state.clear()
            await mongo.close()

    async def mongo_ready() -> bool:
        return "mongo" in state and await ping(state["mongo"])

    return create_app(
        title=name,
        description=description,
        settings=settings,
        lifespan=lifespan,
        checks={"database": mongo_ready},
        routers=routers,
        check_timeout=settings.mongodb_timeout_seconds,
    )
