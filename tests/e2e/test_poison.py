"""Poison in apply is parked, outages never are, on the real broker: a command that fails the
same way on every redelivery is dead-lettered with its reason after WORKER_MAX_REDELIVERIES
and its partition moves on; a database that is down (reached through a TCP proxy switched to
refuse, then to swallow connections) keeps its batch redelivering, however long it lasts, and
the batch applies once the database is back."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.uri_parser import parse_uri
from tcpproxy import TcpProxy, mongo_upstream

from conftest import Backend
from siteview_common.consumer import Apply
from siteview_common.events import HEADER_EVENT_ID, PublishedEvent, Topics
from siteview_common.kafka import ensure_topics, make_broker
from siteview_common.runtime import Runtime, WorkerSettings
from support import dead_letter_headers, eventually_async, new_svix_id

pytestmark = pytest.mark.e2e

MAX_REDELIVERIES = 2
KEY = b"user_same_partition"


@dataclass
class Worker:
    """A consumer group on a topic of its own (one partition), with the test's apply."""

    backend: Backend
    topic: str
    group: str
    settings: WorkerSettings
    runtime: Runtime

    @property
    def dlq(self) -> str:
        return Topics.dlq(self.topic)

    async def publish(self, svix_id: str) -> None:
        record = PublishedEvent.model_validate(
            {"svixId": svix_id, "receivedAt": 1, "event": {"type": "test.event", "data": {}}}
        )
        await self.runtime.broker.publish(
            record.to_json(), topic=self.topic, key=KEY, headers={HEADER_EVENT_ID: svix_id}
        )

    def metric(self, name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"group": self.group, **labels}) or 0.0

    async def committed(self) -> int | None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.backend.kafka, group_id=self.group)
        await consumer.start()
        try:
            offset: int | None = await consumer.committed(TopicPartition(self.topic, 0))
            return offset
        finally:
            await consumer.stop()

    async def dead_lettered(self) -> list[str]:
        """The event ids of every message in the DLQ (one partition), read up to its end."""
        partition = TopicPartition(self.dlq, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.backend.kafka)
        await consumer.start()
        try:
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            end = (await consumer.end_offsets([partition]))[partition]
            ids: list[str] = []
            async with asyncio.timeout(30):
                while await consumer.position(partition) < end:
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        for record in records:
                            headers = dict(record.headers)
                            ids.append(headers[HEADER_EVENT_ID].decode())
            return ids
        finally:
            await consumer.stop()


@pytest.fixture
async def start_worker(backend: Backend, mongo_client: AsyncMongoClient[Any]) -> AsyncIterator[Any]:
    started: list[Worker] = []

    async def start(apply: Apply[str]) -> Worker:
        suffix = uuid.uuid4().hex[:8]
        settings = WorkerSettings(
            app_env="development",
            kafka_bootstrap_servers=backend.kafka,
            mongodb_database=f"poison_{suffix}",
            kafka_topic_partitions=1,
            worker_max_redeliveries=MAX_REDELIVERIES,
            worker_retry_initial_seconds=0.05,
            worker_retry_max_seconds=0.3,
        )
        topic = f"poison-{suffix}"
        await ensure_topics(settings, [topic, Topics.dlq(topic)])
        broker = make_broker(settings, client_id=f"poison-test-{suffix}")
        runtime = Runtime(settings, mongo_client, broker)
        runtime.consume(topic, group=f"poison-{suffix}", parse=lambda e: e.svix_id, apply=apply)
        await broker.start()
        worker = Worker(backend, topic, f"poison-{suffix}", settings, runtime)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            await worker.runtime.broker.stop()
            await mongo_client.drop_database(worker.settings.mongodb_database)


async def test_a_command_that_always_fails_is_dead_lettered_and_its_partition_moves_on(
    start_worker: Any,
) -> None:
    first, poison, last, marker = (new_svix_id() for _ in range(4))
    applied: list[str] = []
    failed_with_poison = 0

    async def apply(commands: Sequence[str]) -> None:
        nonlocal failed_with_poison
        if poison in commands:
            failed_with_poison += 1
            raise ValueError(f"cannot apply {poison}")
        applied.extend(commands)

    worker: Worker = await start_worker(apply)
    for svix_id in (first, poison, last):
        await worker.publish(svix_id)

    headers = await dead_letter_headers(worker.backend.kafka, worker.dlq, poison)
    assert headers["dlq-reason"] == f"ValueError: cannot apply {poison}"
    assert headers["dlq-group"] == worker.group
    assert headers["dlq-source-topic"] == f"{worker.topic}/0/1"
    # Delivered whole, then redelivered whole MAX_REDELIVERIES times, before being isolated.
    assert failed_with_poison >= 1 + MAX_REDELIVERIES + 1
    assert worker.metric("siteview_redeliveries_total", failure="permanent") >= (
        1 + MAX_REDELIVERIES
    )

    await worker.publish(marker)  # the same key: the same partition, behind the poison

    async def marker_applied() -> bool:
        return marker in applied

    await eventually_async(marker_applied, timeout=30)
    assert Counter(applied) == {first: 1, last: 1, marker: 1}
    assert await worker.dead_lettered() == [poison]
    labels = {"topic": worker.topic, "stage": "apply", "error": "ValueError"}
    assert worker.metric("siteview_dead_letters_total", **labels) == 1

    async def all_committed() -> bool:
        return await worker.committed() == 4

    await eventually_async(all_committed, timeout=30)


def proxied_client(mongo_url: str, proxy: TcpProxy) -> AsyncMongoClient[Any]:
    """A client of the backend's MongoDB that reaches it only through `proxy`, and gives up
    on an unreachable or silent server quickly."""
    parsed = parse_uri(mongo_url)
    options = {
        key: value
        for key, value in (
            ("username", parsed["username"]),
            ("password", parsed["password"]),
            ("authSource", parsed["options"].get("authsource")),
        )
        if value
    }
    return AsyncMongoClient(
        proxy.host,
        proxy.port,
        directConnection=True,
        serverSelectionTimeoutMS=300,
        connectTimeoutMS=300,
        socketTimeoutMS=1000,
        retryWrites=False,
        tz_aware=True,
        **options,
    )


async def test_an_outage_is_never_dead_lettered_and_applies_once_it_ends(
    start_worker: Any, backend: Backend, mongo_client: AsyncMongoClient[Any]
) -> None:
    event, marker = new_svix_id(), new_svix_id()
    proxy = TcpProxy(*mongo_upstream(backend.mongo)).start()
    client = proxied_client(backend.mongo, proxy)
    database = f"outage_{uuid.uuid4().hex[:8]}"
    attempts: list[list[str]] = []

    async def apply(commands: Sequence[str]) -> None:
        attempts.append(list(commands))
        writes = [UpdateOne({"_id": c}, {"$inc": {"applies": 1}}, upsert=True) for c in commands]
        await client[database]["applied"].bulk_write(writes, ordered=False)

    async def applies(svix_id: str) -> int:
        doc = await mongo_client[database]["applied"].find_one({"_id": svix_id})
        return int(doc["applies"]) if doc else 0

    try:
        worker: Worker = await start_worker(apply)
        proxy.refuse()  # the database is down: nothing listens
        await worker.publish(event)

        def transient() -> float:
            return worker.metric("siteview_redeliveries_total", failure="transient")

        async def redelivered(times: float) -> bool:
            return transient() >= times

        await eventually_async(lambda: redelivered(MAX_REDELIVERIES + 2), timeout=60)
        proxy.black_hole()  # it accepts connections and never answers
        seen = transient()
        await eventually_async(lambda: redelivered(seen + 2), timeout=60)
        assert await applies(event) == 0
        assert len(attempts) > 1 + MAX_REDELIVERIES  # more than the bound for poison
        assert all(batch == [event] for batch in attempts)

        proxy.forward()  # the outage ends

        async def applied(svix_id: str) -> bool:
            return await applies(svix_id) > 0

        await eventually_async(lambda: applied(event), timeout=60)
        await worker.publish(marker)
        await eventually_async(lambda: applied(marker), timeout=30)

        assert await applies(event) == 1
        assert await worker.dead_lettered() == []
        assert worker.metric("siteview_redeliveries_total", failure="permanent") == 0
    finally:
        await client.close()
        proxy.stop()
        await mongo_client.drop_database(database)
