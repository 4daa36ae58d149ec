"""Topic routing and the published record."""

from __future__ import annotations

import pytest

from siteview_common.events import ClerkEvent, PublishedEvent, Topics, route, strip_private_metadata
from support import example

SVIX_ID = "msg_route_test"


@pytest.mark.parametrize(
    ("name", "topic", "key"),
    [
        ("user.created", Topics.USERS, "user_2abcDEFghiJKLmnoPQRstuVWx"),
        ("user.deleted", Topics.USERS, "user_2abcDEFghiJKLmnoPQRstuVWx"),
        ("session.created", Topics.USERS, "user_2abcDEFghiJKLmnoPQRstuVWx"),
        ("paymentAttempt.updated", Topics.BILLING, "user_2abcDEFghiJKLmnoPQRstuVWx"),
        ("subscription.active", Topics.BILLING, "user_2abcDEFghiJKLmnoPQRstuVWx"),
        ("subscriptionItem.canceled", Topics.BILLING, "user_2abcDEFghiJKLmnoPQRstuVWx"),
    ],
)
def test_examples_route_to_their_topic_keyed_by_the_user(name: str, topic: str, key: str) -> None:
    target = route(ClerkEvent.model_validate(example(name)), SVIX_ID)
    assert (target.topic, target.key) == (topic, key)


def test_an_organization_payer_keys_by_the_organization() -> None:
    event = example("paymentAttempt.created")
    event["data"]["payer"].pop("user_id")
    event["data"]["payer"]["organization_id"] = "org_123"
    assert route(ClerkEvent.model_validate(event), SVIX_ID).key == "org_123"


@pytest.mark.parametrize("kind", ["waitlistEntry.created", "role.created", "sms.created"])
def test_unknown_types_go_to_the_other_topic_keyed_by_svix_id(kind: str) -> None:
    event = ClerkEvent(type=kind, data={"id": "x"}, timestamp=1)
    assert route(event, SVIX_ID) == route(event, SVIX_ID)
    assert (route(event, SVIX_ID).topic, route(event, SVIX_ID).key) == (Topics.OTHER, SVIX_ID)


def test_organization_membership_goes_to_users_keyed_by_member() -> None:
    event = ClerkEvent(
        type="organizationMembership.created",
        data={"public_user_data": {"user_id": "user_member"}},
    )
    assert (route(event, SVIX_ID).topic, route(event, SVIX_ID).key) == (Topics.USERS, "user_member")


def test_private_metadata_is_removed_at_every_depth() -> None:
    event = example("session.created")
    event["data"]["private_metadata"] = {"secret": 1}
    stripped = strip_private_metadata(event)
    assert "private_metadata" not in stripped["data"]
    assert "private_metadata" not in stripped["data"]["user"]
    assert stripped["data"]["user"]["public_metadata"] == {}
    assert "private_metadata" in event["data"]["user"]  # the input is not modified


def test_published_event_round_trips_with_camel_case_keys() -> None:
    record = PublishedEvent(
        svix_id="msg_1", received_at=5, event=ClerkEvent.model_validate(example("user.deleted"))
    )
    raw = record.to_json()
    assert b'"svixId":"msg_1"' in raw and b'"receivedAt":5' in raw
    assert PublishedEvent.model_validate_json(raw) == record
