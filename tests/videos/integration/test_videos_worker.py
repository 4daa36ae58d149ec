"""The worker's subscriber on FastStream's TestKafkaBroker, writing to the session's MongoDB:
the `user.deleted` cascade, the ledger, ignored events and the dead-letter queue."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.events import HEADER_DLQ_REASON, PublishedEvent, Topics
from siteview_common.runtime import Runtime
from siteview_videos import bootstrap, schema
from siteview_videos.domain import new_video, new_video_id
from siteview_videos.settings import VideosSettings
from support import example, new_svix_id, new_user_id, user_event

DELETED_AT = 1_776_263_400_000


@dataclass
class Worker:
    broker: TestKafkaBroker
    db: AsyncDatabase[Any]
    dead_letters: list[dict[str, str]]

    async def deliver(self, *events: dict[str, Any], svix_ids: list[str] | None = None) -> None:
        """Publish `events` as one batch, keyed by the user they are about."""
        ids = svix_ids or [new_svix_id() for _ in events]
        bodies = [
            PublishedEvent.model_validate(
                {"svixId": sid, "receivedAt": 1_776_263_401_000, "event": event}
            ).to_json()
            for sid, event in zip(ids, events, strict=True)
        ]
        await self.broker.publish_batch(*bodies, topic=Topics.USERS)

    async def video(self, video_id: str) -> dict[str, Any]:
        doc = await self.db[schema.VIDEOS].find_one({"_id": video_id})
        assert doc is not None
        return doc

    async def add_video(self, user_id: str, created_at: int) -> str:
        video_id = new_video_id()
        await self.db[schema.VIDEOS].insert_one(
            new_video(
                video_id=video_id,
                user_id=user_id,
                title="t",
                url="https://example.com/v",
                now=created_at,
            )
        )
        return video_id


@pytest.fixture
async def worker(
    backend: Any, mongo_client: AsyncMongoClient[Any], db: AsyncDatabase[Any]
) -> AsyncIterator[Worker]:
    settings = VideosSettings(
        app_env="development", mongodb_url=backend.mongo, mongodb_database=db.name
    )
    broker = KafkaBroker()
    runtime = Runtime(settings, mongo_client, broker)
    await runtime.ledger.create_indexes()
    await bootstrap.subscribe(runtime)
    dead_letters: list[dict[str, str]] = []

    @broker.subscriber(Topics.dlq(Topics.USERS))
    async def dead_letter(message: KafkaMessage) -> None:
        dead_letters.append(dict(message.headers))

    async with TestKafkaBroker(broker) as test_broker:
        yield Worker(test_broker, db, dead_letters)


async def test_a_user_deletion_soft_deletes_their_live_videos(worker: Worker) -> None:
    gone, stays = new_user_id(), new_user_id()
    theirs = [await worker.add_video(gone, DELETED_AT - i) for i in range(3)]
    other = await worker.add_video(stays, DELETED_AT - 1)

    await worker.deliver(user_event("user.deleted", gone, updated_at=DELETED_AT))

    for video_id in theirs:
        assert (await worker.video(video_id))["deletedAt"] == DELETED_AT
    assert (await worker.video(other))["deletedAt"] is None
    tombstone = await worker.db[schema.DELETED_USERS].find_one({"_id": gone})
    assert tombstone is not None
    assert (tombstone["_id"], tombstone["deletedAt"]) == (gone, DELETED_AT)
    assert tombstone["appliedAt"] >= DELETED_AT  # when this worker first applied it
    assert worker.dead_letters == []


async def test_replays_never_touch_videos_created_after_the_deletion(worker: Worker) -> None:
    gone = new_user_id()
    before = await worker.add_video(gone, DELETED_AT)
    # created after Clerk deleted the user but before the event arrived: removed as well
    in_between = await worker.add_video(gone, DELETED_AT + 1)
    event = user_event("user.deleted", gone, updated_at=DELETED_AT)
    svix_id = new_svix_id()
    await worker.deliver(event, svix_ids=[svix_id])
    assert (await worker.video(in_between))["deletedAt"] == DELETED_AT
    # written once the deletion was applied (a request in flight at that moment)
    after = await worker.add_video(gone, int(time.time() * 1000) + 60_000)

    await worker.deliver(event, svix_ids=[svix_id])  # Clerk's retry: the ledger skips it
    await worker.deliver(event, event)  # a dashboard replay (new Svix ids), twice in one batch

    assert (await worker.video(before))["deletedAt"] == DELETED_AT
    assert (await worker.video(after))["deletedAt"] is None
    assert await worker.db[schema.DELETED_USERS].count_documents({"_id": gone}) == 1
    applied = await worker.db["processed_events"].count_documents({})
    assert applied == 3


async def test_other_events_are_ignored(worker: Worker) -> None:
    user_id = new_user_id()
    video_id = await worker.add_video(user_id, DELETED_AT)
    created = user_event("user.created", user_id, updated_at=DELETED_AT + 5)
    updated = user_event("user.updated", user_id, updated_at=DELETED_AT + 6)
    await worker.deliver(created, updated, example("session.created"))

    assert (await worker.video(video_id))["deletedAt"] is None
    assert await worker.db[schema.DELETED_USERS].count_documents({}) == 0
    assert await worker.db["processed_events"].count_documents({}) == 0
    assert worker.dead_letters == []


async def test_a_deletion_without_a_user_id_is_dead_lettered(worker: Worker) -> None:
    gone = new_user_id()
    video_id = await worker.add_video(gone, DELETED_AT)
    malformed = user_event("user.deleted", "user_x", updated_at=DELETED_AT)
    del malformed["data"]["id"]

    await worker.deliver(malformed, user_event("user.deleted", gone, updated_at=DELETED_AT))

    assert len(worker.dead_letters) == 1
    assert "ValidationError" in worker.dead_letters[0][HEADER_DLQ_REASON]
    assert (await worker.video(video_id))["deletedAt"] == DELETED_AT  # the batch moved on
