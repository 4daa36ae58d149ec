"""Change notices: one per (user, collection) a batch touched, ids merged, camelCase JSON keyed
by the user; each service's rule for what its commands touch; and a publish that fails fails
(so a worker's batch is redelivered)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from payments.billing import attempt_event, item_event, new_id, published, subscription_event

from siteview_common.changes import Change, ChangeNotice, ChangePublisher, notices
from siteview_common.events import Topics
from siteview_common.kafka import TopicSpec, all_topics
from siteview_payments import domain as payments
from siteview_users import domain as users
from siteview_videos import domain as videos
from support import new_user_id, user_event


def test_one_notice_per_user_and_collection_with_its_ids_merged() -> None:
    batch = [
        Change("user_a", "payment_attempts", "pa_1"),
        Change("user_b", "payment_attempts", "pa_2"),
        Change("user_a", "subscriptions", "sub_1"),
        Change("user_a", "payment_attempts", "pa_3"),
        Change("user_a", "payment_attempts", "pa_1"),
        Change("user_c", "videos"),
    ]
    assert [n.model_dump(by_alias=True) for n in notices(batch, at=42)] == [
        {
            "userId": "user_a",
            "service": "payments",
            "collection": "payment_attempts",
            "ids": ["pa_1", "pa_3"],
            "at": 42,
        },
        {
            "userId": "user_b",
            "service": "payments",
            "collection": "payment_attempts",
            "ids": ["pa_2"],
            "at": 42,
        },
        {
            "userId": "user_a",
            "service": "payments",
            "collection": "subscriptions",
            "ids": ["sub_1"],
            "at": 42,
        },
        {"userId": "user_c", "service": "videos", "collection": "videos", "ids": [], "at": 42},
    ]
    assert notices([], at=1) == []


def test_a_notice_is_camel_case_json_and_reads_back() -> None:
    (notice,) = notices([Change("user_a", "users", "user_a")], at=7)
    assert json.loads(notice.to_json()) == {
        "userId": "user_a",
        "service": "users",
        "collection": "users",
        "ids": ["user_a"],
        "at": 7,
    }
    assert ChangeNotice.model_validate_json(notice.to_json()) == notice


def test_the_notices_topic_is_created_with_the_others_and_kept_an_hour() -> None:
    assert Topics.CHANGES == "siteview.changes.v1"
    assert Topics.CHANGES in all_topics()
    assert Topics.dlq(Topics.CHANGES) not in all_topics()
    configs = dict(TopicSpec(12, 3, 2).new_topic(Topics.CHANGES).topic_configs)
    assert configs == {"min.insync.replicas": "2", "retention.ms": "3600000"}
    assert "retention.ms" not in TopicSpec(12, 3, 2).new_topic(Topics.USERS).topic_configs


def test_users_touch_the_profile_of_each_event() -> None:
    a, b = new_user_id(), new_user_id()
    commands = [
        users.to_command(published(user_event("user.created", a, updated_at=1))),
        users.to_command(published(user_event("user.deleted", b, updated_at=2))),
    ]
    assert users.touched([c for c in commands if c is not None]) == [
        Change(a, "users", a),
        Change(b, "users", b),
    ]


def test_payments_touch_attempts_and_subscriptions_of_paying_users_only() -> None:
    user = new_user_id()
    attempt_id, subscription_id, item_id = new_id("pa"), new_id("sub"), new_id("subi")
    events = [
        attempt_event(user, attempt_id=attempt_id, status="paid"),
        subscription_event(user, subscription_id=subscription_id, items=[], updated_at=5),
        item_event(user, item_id=item_id, status="active", timestamp=6),
        attempt_event(None, org_id=new_id("org")),  # an organization's: in no user's view
    ]
    commands = [payments.to_command(published(e)) for e in events]
    assert payments.touched([c for c in commands if c is not None]) == [
        Change(user, "payment_attempts", attempt_id),
        Change(user, "subscriptions", subscription_id),
        Change(user, "subscriptions", item_id),
    ]


def test_videos_touch_a_deleted_users_list_and_each_video_the_api_writes() -> None:
    user = new_user_id()
    command = videos.to_command(published(user_event("user.deleted", user, updated_at=3)))
    assert command is not None
    assert videos.touched([command]) == [Change(user, "videos"), Change(user, "splats")]
    assert videos.video_changed(user, "v1") == Change(user, "videos", "v1")


class Producer:
    """Stands in for the broker's producer: records what it is given; acks or refuses."""

    def __init__(self, error: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.error = error

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        self.sent.append((topic, value, key))
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.error is None:
            ack.set_result(None)
        else:
            ack.set_exception(self.error)
        return ack


async def test_notices_are_keyed_by_user_and_all_sent_before_the_acks() -> None:
    producer = Producer()
    publisher = ChangePublisher(producer.send, clock=lambda: 9)
    sent = await publisher.publish([Change("user_a", "users", "user_a"), Change("user_b", "users")])
    assert sent == 2
    assert [(t, json.loads(v)["userId"], k) for t, v, k in producer.sent] == [
        (Topics.CHANGES, "user_a", b"user_a"),
        (Topics.CHANGES, "user_b", b"user_b"),
    ]


async def test_a_refused_publish_raises() -> None:
    publisher = ChangePublisher(Producer(ConnectionError("broker gone")).send)
    with pytest.raises(ConnectionError):
        await publisher.publish([Change("user_a", "users", "user_a")])
