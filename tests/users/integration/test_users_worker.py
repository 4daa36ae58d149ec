"""The users worker's subscriber on FastStream's in-memory TestKafkaBroker, with the real
MongoDB driver underneath: decoding, the ledger, dead-lettering, ordering."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.events import Topics
from siteview_common.runtime import Runtime
from siteview_users.bootstrap import subscribe
from siteview_users.repository import UserRepository
from siteview_users.settings import UsersSettings
from support import new_svix_id, new_user_id, user_event


class Harness:
    def __init__(self, broker: KafkaBroker, runtime: Runtime) -> None:
        self.broker = broker
        self.runtime = runtime
        self.repo = UserRepository(runtime.db)
        self.dead: list[bytes] = []

    async def send(self, event: dict[str, Any] | bytes, svix_id: str | None = None) -> None:
        if isinstance(event, bytes):
            value = event
        else:
            value = json.dumps(
                {"svixId": svix_id or new_svix_id(), "receivedAt": 1, "event": event}
            ).encode()
        await self.broker.publish(value, topic=Topics.USERS, key=b"k")


@pytest.fixture
async def runtime(mongo_client: AsyncMongoClient[Any], db: AsyncDatabase[Any]) -> Runtime:
    """A worker runtime on an in-memory broker and a database of the test's own."""
    settings = UsersSettings(
        app_env="development", kafka_bootstrap_servers="unused:9092", mongodb_database=db.name
    )
    runtime = Runtime(settings, mongo_client, KafkaBroker())
    await runtime.ledger.create_indexes()
    return runtime


@pytest.fixture
async def harness(runtime: Runtime) -> AsyncIterator[Harness]:
    broker = runtime.broker
    await subscribe(runtime)
    h = Harness(broker, runtime)

    @broker.subscriber(Topics.dlq(Topics.USERS))
    async def dead_letters(message: KafkaMessage) -> None:
        h.dead.append(message.body)

    async with TestKafkaBroker(broker):
        yield h


async def test_a_created_user_is_stored_with_name_and_primary_email(harness: Harness) -> None:
    uid = new_user_id()
    await harness.send(user_event("user.created", uid, updated_at=100))
    doc = await harness.repo.get(uid)
    assert doc is not None
    assert (doc["name"], doc["email"]) == ("Ada Lovelace", "ada.lovelace@example.com")


async def test_a_redelivered_svix_id_is_applied_once(harness: Harness) -> None:
    uid, svix_id = new_user_id(), new_svix_id()
    await harness.send(user_event("user.created", uid, updated_at=100), svix_id)
    await harness.send(user_event("user.updated", uid, updated_at=200, first_name="Grace"), svix_id)
    doc = await harness.repo.get(uid)
    assert doc is not None and doc["name"] == "Ada Lovelace"
    assert await harness.runtime.ledger.seen([svix_id]) == {svix_id}


async def test_stale_events_do_not_win(harness: Harness) -> None:
    uid = new_user_id()
    await harness.send(user_event("user.updated", uid, updated_at=200, first_name="New"))
    await harness.send(user_event("user.created", uid, updated_at=100, first_name="Old"))
    doc = await harness.repo.get(uid)
    assert doc is not None and doc["name"] == "New Lovelace"


async def test_poison_goes_to_the_dead_letter_topic_and_the_next_message_applies(
    harness: Harness,
) -> None:
    uid = new_user_id()
    await harness.send(b"{not json")
    broken = user_event("user.updated", uid, updated_at=1)
    broken["data"]["id"] = "not-a-user-id"
    await harness.send(broken)
    await harness.send(user_event("user.created", uid, updated_at=100))
    assert len(harness.dead) == 2
    assert harness.dead[0] == b"{not json"
    assert json.loads(harness.dead[1])["event"]["data"]["id"] == "not-a-user-id"
    assert await harness.repo.get(uid) is not None


async def test_other_event_types_are_ignored(harness: Harness) -> None:
    await harness.send({"type": "session.created", "object": "event", "data": {"id": "sess"}})
    assert harness.dead == []
    assert await harness.runtime.db["users"].count_documents({}) == 0


async def test_a_parse_that_crashes_dead_letters_instead_of_blocking(runtime: Runtime) -> None:
    """Parsing is pure: an exception there would recur on every redelivery, so the message is
    parked like any other poison and the batch goes on."""
    broker = runtime.broker
    applied: list[str] = []

    def parse(event: Any) -> str:
        if event.event.type == "boom":
            raise KeyError("unexpected shape")
        return str(event.svix_id)

    async def apply(commands: Any) -> None:
        applied.extend(commands)

    runtime.consume(Topics.USERS, group="crash-test", parse=parse, apply=apply)
    dead: list[bytes] = []

    @broker.subscriber(Topics.dlq(Topics.USERS))
    async def dead_letters(message: KafkaMessage) -> None:
        dead.append(message.body)

    async with TestKafkaBroker(broker):
        boom = json.dumps({"svixId": "m1", "receivedAt": 1, "event": {"type": "boom", "data": {}}})
        fine = json.dumps({"svixId": "m2", "receivedAt": 1, "event": {"type": "ok", "data": {}}})
        await broker.publish(boom.encode(), topic=Topics.USERS)
        await broker.publish(fine.encode(), topic=Topics.USERS)
    assert [json.loads(d)["svixId"] for d in dead] == ["m1"]
    assert applied == ["m2"]
