"""Composition helpers: each process's root builds its clients here, inside the running loop.

`worker_app` and `api_app` return FastAPI apps whose lifespan opens MongoDB (refusing the dev
stand-in outside development) and, for workers, the Kafka broker with its batch subscribers.
Both serve `/healthz`, `/readyz` and `/metrics`; the API adds the service's routers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.auth import ClerkTokenVerifier
from siteview_common.changes import BackgroundNotices, ChangePublisher, Changes, Send
from siteview_common.consumer import (
    Apply,
    BatchProcessor,
    Decode,
    EventLedger,
    LagRecorder,
    Parse,
    RedeliveryPolicy,
    clerk_decoder,
)
from siteview_common.events import Topics
from siteview_common.kafka import CONSUMER_OPTIONS, all_topics, ensure_topics, make_broker
from siteview_common.live import LiveHub, LiveKafka
from siteview_common.mongo import check_server, make_mongo_client, ping
from siteview_common.pagination import CursorCodec
from siteview_common.settings import (
    ClerkAuthSettings,
    DeliverySettings,
    KafkaSettings,
    LiveSettings,
    MongoSettings,
    PaginationSettings,
)
from siteview_common.webapp import create_app

log = logging.getLogger(__name__)

C = TypeVar("C")

#: How long a stopping worker waits for the batch in flight to apply and commit (FastStream's
#: `graceful_timeout`), after uvicorn's own graceful shutdown of HTTP connections (10 s).
WORKER_GRACEFUL_SECONDS = 15.0
#: How often `siteview_consumer_lag` is refreshed besides after every batch: an idle worker's
#: lag still moves when events arrive that it has not fetched yet.
LAG_INTERVAL_SECONDS = 5.0


class WorkerSettings(KafkaSettings, MongoSettings, DeliverySettings):
    """A consuming service: its broker, its own database (MONGODB_DATABASE) and how it
    redelivers failed batches (WORKER_*)."""

    mongodb_database: str = "app"


class ServiceSettings(WorkerSettings, ClerkAuthSettings, LiveSettings):
    """A consuming service's settings, shared by its api and worker processes."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """One `Runtime.consume`, as its caller gave it: exactly one of `parse` (the gateway's
    records) and `decode` (records of another shape)."""

    topic: str
    group: str
    apply: Apply[Any]
    parse: Parse[Any] | None = None
    decode: Decode[Any] | None = None
    changes: Changes[Any] | None = None

    def decoder(self) -> Decode[Any]:
        if self.parse is not None and self.decode is None:
            return clerk_decoder(self.parse)
        if self.decode is not None and self.parse is None:
            return self.decode
        raise TypeError("give either parse or decode")


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
        #: Each subscriber's lag recorder, refreshed by the worker on a timer.
        self.lag: list[tuple[Any, LagRecorder]] = []
        #: Jobs the worker runs on a timer while it consumes (`every`).
        self.periodic: list[Periodic] = []

    def consume(
        self,
        topic: str,
        *,
        group: str,
        parse: Parse[Any] | None = None,
        apply: Apply[Any],
        changes: Changes[Any] | None = None,
        decode: Decode[Any] | None = None,
    ) -> None:
        """Batches of `topic` in consumer group `group`; offsets commit only after `apply`.
        The gateway's topics give `parse`; a topic with records of another shape gives
        `decode` (`consumer.Decode`: the ledger's id and the command of one record).
        A failed batch is rewound and redelivered after a back-off (`BatchProcessor.handle`):
        for as long as the failure is transient, else until its culprits are dead-lettered.
        `changes` (pure: commands → the documents they touch): once a batch (or, while its
        culprits are isolated, each part of it) applied, its change notices are published,
        before the ledger records it and the offsets commit; a publish that fails fails the
        batch like a write would."""
        sub = Subscription(topic, group, apply, parse=parse, decode=decode, changes=changes)
        self.subscribe(sub)

    def subscribe(self, sub: Subscription) -> None:
        """`consume`'s subscriber on the worker's broker (a replay records `sub` instead)."""
        apply = sub.apply
        if sub.changes is not None:
            apply = _publishing(apply, sub.changes, self.change_notices())
        processor = BatchProcessor(
            group=sub.group,
            broker=self.broker,
            ledger=self.ledger,
            decode=sub.decoder(),
            apply=apply,
            policy=RedeliveryPolicy.from_settings(self.settings),
        )
        self.topics += [sub.topic, Topics.dlq(sub.topic)]
        subscriber = self.broker.subscriber(
            sub.topic,
            group_id=sub.group,
            batch=True,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            **CONSUMER_OPTIONS,
        )
        lag = LagRecorder(sub.group)
        self.lag.append((subscriber, lag))

        async def handle(message: KafkaMessage) -> None:
            raw = message.raw_message
            records = list(raw) if isinstance(raw, (list, tuple)) else [raw]
            await processor.handle(records)
            await _record_lag(subscriber, lag)

        subscriber(handle)

    def change_notices(self) -> ChangePublisher:
        """Change notices through the worker's broker, for writes that learn which documents
        they touched only as they run (`consume`'s `changes` is the way for a batch's)."""
        return ChangePublisher(_broker_send(self.broker))

    async def record_lag(self) -> None:
        """Refresh `siteview_consumer_lag` for every subscriber's assigned partitions."""
        for subscriber, lag in self.lag:
            await _record_lag(subscriber, lag)

    def every(self, seconds: float, job: Callable[[], Awaitable[object]], *, name: str) -> None:
        """Run `job` every `seconds` while the worker consumes (from its start to its stop).
        A run that raises is logged; the next one runs on time."""
        self.periodic.append(Periodic(name, seconds, job))


@dataclass(frozen=True, slots=True)
class Periodic:
    name: str
    seconds: float
    job: Callable[[], Awaitable[object]]

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.seconds)
            try:
                await self.job()
            except Exception:
                log.exception("periodic job failed; it runs again", extra={"job": self.name})


def _publishing(apply: Apply[C], changes: Changes[C], publisher: ChangePublisher) -> Apply[C]:
    """`apply`, then the change notices of what it applied."""

    async def apply_then_notify(commands: Sequence[C]) -> int | None:
        stale = await apply(commands)
        await publisher.publish(changes(commands))
        return stale

    return apply_then_notify


def _broker_send(broker: KafkaBroker) -> Send:
    """Publishing through the worker's own broker: the future resolves on the ack."""

    async def send(topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        sent: Any = await broker.publish(value, topic, key=key, no_confirm=True)
        if isinstance(sent, asyncio.Future):
            return sent
        # Already delivered (FastStream's in-memory TestKafkaBroker): nothing left to await.
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(sent)
        return done

    return send


async def _record_lag(subscriber: Any, lag: LagRecorder) -> None:
    """Record one subscriber's lag; a metric never fails a batch or stops the worker."""
    try:
        await lag.record(getattr(subscriber, "consumer", None))
    except Exception:
        log.warning("could not record consumer lag", exc_info=True)


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
    """A worker process: `setup` subscribes (`Runtime.consume`). FastStream's Prometheus
    middleware measures every batch received and every message published (`faststream_*`
    in `/metrics`, with `app_name` = `name`). On SIGTERM uvicorn closes the HTTP side, then
    the broker stops fetching, lets the batch in flight apply and commit (up to
    WORKER_GRACEFUL_SECONDS), and leaves its consumer group, so its partitions move on at
    once from the last committed offsets."""
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        mongo = await _open_mongo(settings, name)
        broker = make_broker(
            settings,
            client_id=name,
            graceful_timeout=WORKER_GRACEFUL_SECONDS,
            middlewares=(KafkaPrometheusMiddleware(registry=REGISTRY, app_name=name),),
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            runtime = Runtime(settings, mongo, broker)
            await setup(runtime)
            await ensure_topics(settings, [*all_topics(), *runtime.topics])
            await runtime.ledger.create_indexes()
            await broker.start()
            refresh_lag = Periodic("consumer-lag", LAG_INTERVAL_SECONDS, runtime.record_lag)
            tasks += [
                asyncio.create_task(p.run(), name=p.name) for p in (refresh_lag, *runtime.periodic)
            ]
            state.update(mongo=mongo, broker=broker)
            log.info("worker started", extra={"database": settings.mongodb_database})
            yield
            log.info(
                "worker stopping: finishing the batch in flight",
                extra={"graceSeconds": WORKER_GRACEFUL_SECONDS},
            )
        finally:
            state.clear()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await broker.stop()
            await mongo.close()
        log.info("worker stopped: consumer group left")

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
    publishes_changes: bool = False,
) -> FastAPI:
    """An authenticated API process. The session-token verifier (and, for settings with a
    cursor secret, the cursor codec) are built here, MongoDB is opened in the lifespan, and
    `setup` puts the service's read side on `app.state` for its routes' dependencies. Every
    database operation ends within MONGODB_TIMEOUT_SECONDS; one that fails because the
    database is unavailable answers 503 (see `webapp`).

    Live queries: the lifespan starts this process's change-notice consumer in the background
    (`live.LiveKafka`; readiness does not wait for Kafka) and puts the streams' hub on
    `app.state.live`. An API that writes (`publishes_changes`) also gets a producer, and
    `app.state.changes` publishes its notices without making requests wait for the broker."""
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
        hub = LiveHub(settings)
        kafka = LiveKafka(settings, hub, client_id=name, produce=publishes_changes)
        notices = BackgroundNotices(ChangePublisher(kafka.send))
        app.state.live = hub
        app.state.changes = notices
        try:
            await setup(app, mongo[settings.mongodb_database])
            kafka.start()
            state["mongo"] = mongo
            yield
        finally:
            state.clear()
            await notices.drain()
            await kafka.stop()
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
