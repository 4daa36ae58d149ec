"""The payments worker's subscriber on FastStream's in-memory TestKafkaBroker, with the real
MongoDB driver underneath: decoding, the Svix-id ledger, dead-lettering, ordering."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from payments.billing import attempt_event, envelope, item_event, new_id, subscription_event
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.events import HEADER_DLQ_REASON, HEADER_EVENT_ID, Topics
from siteview_common.runtime import Runtime
from siteview_payments.bootstrap import GROUP, consume_billing
from siteview_payments.repository import PaymentsRepository
from siteview_payments.settings import PaymentsSettings
from support import new_svix_id, new_user_id, user_event


@dataclass
class Harness:
    broker: KafkaBroker
    runtime: Runtime
    repo: PaymentsRepository
    dead: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    async def send(self, event: dict[str, Any] | bytes, svix_id: str | None = None) -> None:
        svix_id = svix_id or new_svix_id()
        value = event if isinstance(event, bytes) else envelope(event, svix_id=svix_id)
        await self.broker.publish(
            value, topic=Topics.BILLING, key=b"k", headers={HEADER_EVENT_ID: svix_id}
        )

    async def send_batch(self, *events: dict[str, Any]) -> None:
        await self.broker.publish_batch(*(envelope(e) for e in events), topic=Topics.BILLING)

    async def status(self, attempt_id: str) -> str | None:
        doc = await self.repo.get_attempt(attempt_id)
        return doc["status"] if doc else None


@pytest.fixture
async def harness(
    mongo_client: AsyncMongoClient[Any], db: AsyncDatabase[Any]
) -> AsyncIterator[Harness]:
    settings = PaymentsSettings(
        app_env="development",
        kafka_bootstrap_servers="unused:9092",
        mongodb_database=db.name,
    )
    broker = KafkaBroker()
    runtime = Runtime(settings, mongo_client, broker)
    await runtime.ledger.create_indexes()
    repo = await consume_billing(runtime)
    h = Harness(broker, runtime, repo)

    @broker.subscriber(Topics.dlq(Topics.BILLING))
    async def dead_letters(message: KafkaMessage) -> None:
        h.dead.append((message.body, dict(message.headers)))

    async with TestKafkaBroker(broker):
        yield h


async def test_an_attempt_is_stored_under_its_own_id(harness: Harness) -> None:
    uid, pa = new_user_id(), new_id("pa")
    await harness.send(attempt_event(uid, attempt_id=pa, updated_at=100))
    doc = await harness.repo.get_attempt(pa)
    assert doc is not None
    assert (doc["userId"], doc["status"], doc["version"]) == (uid, "pending", 100)


async def test_a_redelivered_svix_id_is_applied_once(harness: Harness) -> None:
    uid, pa, svix_id = new_user_id(), new_id("pa"), new_svix_id()
    await harness.send(attempt_event(uid, attempt_id=pa, updated_at=100), svix_id)
    # the same Svix id again, even with other content, is a duplicate delivery
    await harness.send(attempt_event(uid, attempt_id=pa, status="paid", updated_at=200), svix_id)
    assert await harness.status(pa) == "pending"
    assert await harness.runtime.ledger.seen([svix_id]) == {svix_id}


async def test_one_batch_in_any_order_converges(harness: Harness) -> None:
    uid, pa = new_user_id(), new_id("pa")
    await harness.send_batch(
        attempt_event(uid, attempt_id=pa, status="paid", updated_at=200),
        attempt_event(uid, attempt_id=pa, status="pending", updated_at=100),
        attempt_event(uid, attempt_id=pa, status="pending", updated_at=100),
    )
    assert await harness.status(pa) == "paid"


async def test_stale_events_across_batches_do_not_win(harness: Harness) -> None:
    uid, pa = new_user_id(), new_id("pa")
    await harness.send(attempt_event(uid, attempt_id=pa, status="failed", updated_at=300))
    await harness.send(attempt_event(uid, attempt_id=pa, status="pending", updated_at=100))
    assert await harness.status(pa) == "failed"


async def test_subscription_and_item_events_build_the_subscription_view(
    harness: Harness,
) -> None:
    uid, sub, item = new_user_id(), new_id("sub"), new_id("subi")
    await harness.send(item_event(uid, item_id=item, status="past_due", timestamp=900))
    await harness.send(
        subscription_event(uid, subscription_id=sub, items=[(item, "active")], updated_at=500)
    )
    [view] = await harness.repo.subscriptions_of(uid)
    assert view["_id"] == sub
    assert [(i["id"], i["status"]) for i in view["items"]] == [(item, "past_due")]


async def test_poison_goes_to_the_dead_letter_topic_and_the_next_message_applies(
    harness: Harness,
) -> None:
    uid, pa = new_user_id(), new_id("pa")
    await harness.send(b"{not json")
    broken, broken_id = attempt_event(uid, drop=["id"]), new_svix_id()
    await harness.send(broken, broken_id)
    orphan_id = new_svix_id()
    await harness.send(attempt_event(None), orphan_id)  # neither user nor organization
    await harness.send(attempt_event(uid, attempt_id=pa))
    assert harness.dead[0][0] == b"{not json"
    body, headers = harness.dead[1]
    assert json.loads(body)["event"]["data"]["payment_id"] == broken["data"]["payment_id"]
    assert headers[HEADER_EVENT_ID] == broken_id
    assert "ValidationError" in headers[HEADER_DLQ_REASON]
    assert headers["dlq-group"] == GROUP
    _, orphan_headers = harness.dead[2]
    assert orphan_headers[HEADER_EVENT_ID] == orphan_id
    assert "PoisonMessageError" in orphan_headers[HEADER_DLQ_REASON]
    assert len(harness.dead) == 3
    assert await harness.status(pa) == "pending"


async def test_other_event_types_are_ignored(harness: Harness) -> None:
    await harness.send(user_event("user.created", new_user_id(), updated_at=1))
    assert harness.dead == []
    for name in ("payment_attempts", "subscriptions", "subscription_items"):
        assert await harness.runtime.db[name].count_documents({}) == 0
