"""At-least-once on the real broker: offsets are committed only after the batch was applied;
a batch whose write fails is redelivered, not lost."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo import AsyncMongoClient

from conftest import Backend
from siteview_common.events import PublishedEvent, Topics
from siteview_common.kafka import ensure_topics, make_broker
from siteview_common.runtime import Runtime, WorkerSettings
from support import eventually_async, new_svix_id

pytestmark = pytest.mark.e2e


async def committed(backend: Backend, group: str, topic: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=backend.kafka, group_id=group)
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(TopicPartition(topic, 0))
        return offset
    finally:
        await consumer.stop()


async def test_a_failed_write_is_redelivered_and_committed_only_after_it_applies(
    backend: Backend, mongo_client: AsyncMongoClient[Any]
) -> None:
    topic, group = f"delivery-{uuid.uuid4().hex[:8]}", f"delivery-{uuid.uuid4().hex[:8]}"
    settings = WorkerSettings(
        app_env="development",
        kafka_bootstrap_servers=backend.kafka,
        mongodb_database=f"delivery_{uuid.uuid4().hex[:8]}",
        kafka_topic_partitions=1,
    )
    await ensure_topics(settings, [topic, Topics.dlq(topic)])
    database_down = True
    attempts: list[list[str]] = []
    applied: list[str] = []

    async def apply(commands: Sequence[str]) -> None:
        attempts.append(list(commands))
        if database_down:
            raise ConnectionError("database unavailable")
        applied.extend(commands)

    broker = make_broker(settings, client_id="delivery-test")
    runtime = Runtime(settings, mongo_client, broker)
    runtime.consume(topic, group=group, parse=lambda event: event.svix_id, apply=apply)
    ids = [new_svix_id() for _ in range(3)]
    await broker.start()
    try:
        for svix_id in ids:
            record = PublishedEvent.model_validate(
                {"svixId": svix_id, "receivedAt": 1, "event": {"type": "t", "data": {}}}
            )
            await broker.publish(record.to_json(), topic=topic, key=b"same-key")

        async def failed_twice() -> bool:
            return len(attempts) >= 2

        await eventually_async(failed_twice, timeout=30)
        assert applied == []
        assert await committed(backend, group, topic) is None  # nothing acknowledged yet
        assert set(attempts[-1]) <= set(ids) and attempts[-1][0] == ids[0]

        database_down = False

        async def all_applied() -> bool:
            return sorted(applied) == sorted(ids)

        await eventually_async(all_applied, timeout=30)

        async def offsets_committed() -> bool:
            return await committed(backend, group, topic) == len(ids)

        await eventually_async(offsets_committed, timeout=30)
        assert len(applied) == len(set(applied))  # each applied once
    finally:
        await broker.stop()
        await mongo_client.drop_database(settings.mongodb_database)
